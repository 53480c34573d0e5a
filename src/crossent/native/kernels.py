"""The native kernels as torch operators: each is a ``torch.library`` custom op with a fake
implementation, so ``torch.compile(fullgraph=True)`` keeps them in its graph.

Every op takes contiguous float32, bfloat16 or float16 tensors (the dispatcher sends nothing else)
and computes in float32. Threads split the rows (or element chunks) among ``torch.get_num_threads()``;
each result depends only on its own row or chunk, so results are bit-identical for any thread count.
The sums of the element-wise losses are chunk sums added in float64 in chunk order.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import torch

from crossent.native._library import library

DTYPES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}
ELEMENTWISE = {"binary_cross_entropy": 0, "binary_cross_entropy_with_logits": 1, "kl_div": 2}


class _Op:
    """A native kernel as a custom op: called straight in eager mode (no dispatcher round trip, which
    costs more than the kernel on small inputs), and as ``torch.ops.crossent.<name>`` while
    ``torch.compile`` traces, so the compiled graph keeps it."""

    def __init__(self, fn: Callable[..., Any], mutates_args: tuple[str, ...]) -> None:
        self.eager = fn
        self.op = torch.library.custom_op(f"crossent::{fn.__name__}", fn, mutates_args=mutates_args)
        self.__doc__ = fn.__doc__

    def register_fake(self, fake: Callable[..., Any]) -> Callable[..., Any]:
        self.op.register_fake(fake)
        return fake

    def __call__(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():
            return self.op(*args)
        return self.eager(*args)


def native_op(*, mutates_args: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], _Op]:
    return lambda fn: _Op(fn, mutates_args)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _handle() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError("crossent's native kernels are not available here (see `crossent env`)")
    return lib.handle


def _rows(x: torch.Tensor) -> tuple[int, int]:
    classes = x.shape[-1] if x.dim() else 1
    return (x.numel() // classes if classes else 0), classes


def _checked(status: int) -> None:
    """Raise for a kernel's failure status (-1: a thread could not allocate its scratch memory)."""
    if status == -1:
        raise MemoryError("crossent's native kernel could not allocate its scratch memory")


def _float32(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None or (t.dtype == torch.float32 and t.is_contiguous()):
        return t
    return t.to(torch.float32).contiguous()


def _per_row(t: torch.Tensor | None, rows: int) -> torch.Tensor | None:
    """A per-row factor as float32 ``(rows,)`` (a 0-dim one repeated)."""
    if t is None:
        return None
    t = t.to(torch.float32)
    return (t.reshape(rows) if t.dim() else t.expand(rows)).contiguous()


@native_op()
def cross_entropy_rows(
    x: torch.Tensor,
    target: torch.Tensor | None,
    prob: torch.Tensor | None,
    weight: torch.Tensor | None,
    ignore_index: int,
    eps: float,
    want_grad: bool,
    coef: torch.Tensor | None,
    coef_scale: float,
    mean_over_weight: bool,
    softcap: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    with_extras: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``(N, C)`` of logits: ``(4, N)`` per-row loss, shift ``k``, ``S`` and mass ``B``
    (probabilities), the total target weight (class indices), and with ``want_grad`` the gradient
    ``c_n dl_n/dx`` for ``c = coef * coef_scale`` (coef: 0-dim, or None for 1), divided by the total
    target weight with ``mean_over_weight``.

    The language-model options: the statistics and loss are those of ``z = softcap tanh(x / softcap)
    / temperature`` (softcap 0: ``x / temperature``), the gradient is for ``x``. ``z_loss`` adds the
    gradient of ``z_loss lse_n^2`` at kept rows (every row for probabilities; never class-weighted)
    for ``c_n``, except that ``mean_over_weight`` divides it by the number of kept rows; the loss row
    stays the cross-entropy alone. ``with_extras`` makes the stats ``(6, N)``: also ``E = sum_c
    exp(z_c - k) (z_c - k)`` and ``correct`` (1.0 where the row is kept and its first argmax is the
    target; 0.0 for probabilities)."""
    rows, classes = _rows(x)
    stats = torch.empty(6 if with_extras else 4, rows, dtype=torch.float32)
    total_weight = torch.empty((), dtype=torch.float32)
    grad = torch.empty(x.shape if want_grad else (0,), dtype=x.dtype)
    bad = ctypes.c_int64()
    coef32, weight32 = _float32(coef), _float32(weight)  # kept alive until the kernel returns
    row = stats.data_ptr()  # the rows of stats, 4 bytes per value
    status = _handle().crossent_cross_entropy(
        DTYPES[x.dtype], x.data_ptr(), rows, classes, _ptr(target), _ptr(prob), ignore_index,
        _ptr(weight32), eps, _ptr(coef32), 0, coef_scale, int(mean_over_weight), 0,
        row, row + 4 * rows, row + 8 * rows, row + 12 * rows if prob is not None else None, total_weight.data_ptr(),
        grad.data_ptr() if want_grad else None, torch.get_num_threads(), ctypes.byref(bad),
        softcap, temperature, z_loss, row + 16 * rows if with_extras else None,
        row + 20 * rows if with_extras else None, None, None, None,
    )  # fmt: skip
    if status == 1:
        raise IndexError(f"Target {bad.value} is out of bounds.")
    _checked(status)
    return stats, total_weight, grad


@cross_entropy_rows.register_fake
def _(
    x,
    target,
    prob,
    weight,
    ignore_index,
    eps,
    want_grad,
    coef,
    coef_scale,
    mean_over_weight,
    softcap=0.0,
    temperature=1.0,
    z_loss=0.0,
    with_extras=False,
):
    grad = x.new_empty(x.shape if want_grad else (0,))
    stats = x.new_empty(6 if with_extras else 4, x.shape[0], dtype=torch.float32)
    return stats, x.new_empty((), dtype=torch.float32), grad


def _cross_entropy_grad(
    out: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor | None,
    prob: torch.Tensor | None,
    weight: torch.Tensor | None,
    shift: torch.Tensor,
    sum_exp: torch.Tensor,
    mass: torch.Tensor | None,
    coef: torch.Tensor,
    ignore_index: int,
    eps: float,
    softcap: float,
    temperature: float,
    lse_coef: torch.Tensor | None,
    ent_coef: torch.Tensor | None,
    ent_sum: torch.Tensor | None,
) -> None:
    rows, classes = _rows(x)
    coef32, weight32 = _float32(coef), _float32(weight)  # kept alive until the kernel returns
    assert coef32 is not None
    lse32, ent32 = _per_row(lse_coef, rows), _per_row(ent_coef, rows)
    if ent32 is not None and ent_sum is None:
        raise ValueError("ent_coef needs ent_sum, the forward's E")
    ent_sum32 = _per_row(ent_sum, rows) if ent32 is not None else None
    bad = ctypes.c_int64()
    status = _handle().crossent_cross_entropy(
        DTYPES[x.dtype], x.data_ptr(), rows, classes, _ptr(target), _ptr(prob), ignore_index,
        _ptr(weight32), eps, coef32.data_ptr(), 1 if coef32.dim() else 0, 1.0, 0, 1, None,
        shift.data_ptr(), sum_exp.data_ptr(), _ptr(mass), None, out.data_ptr(), torch.get_num_threads(),
        ctypes.byref(bad), softcap, temperature, 0.0, None, None, _ptr(lse32), _ptr(ent32), _ptr(ent_sum32),
    )  # fmt: skip
    _checked(status)


@native_op()
def cross_entropy_rows_backward(
    x: torch.Tensor,
    target: torch.Tensor | None,
    prob: torch.Tensor | None,
    weight: torch.Tensor | None,
    shift: torch.Tensor,
    sum_exp: torch.Tensor,
    mass: torch.Tensor | None,
    coef: torch.Tensor,
    ignore_index: int,
    eps: float,
    softcap: float = 0.0,
    temperature: float = 1.0,
    lse_coef: torch.Tensor | None = None,
    ent_coef: torch.Tensor | None = None,
    ent_sum: torch.Tensor | None = None,
) -> torch.Tensor:
    """``coef_n dl_n/dx + lse_coef_n dlse_n/dx + ent_coef_n dH_n/dx`` from the saved statistics, into a
    new tensor (``lse_coef``, ``ent_coef``: ``(N,)`` or 0-dim, or None; ``ent_sum``: the forward's ``E``,
    needed with ``ent_coef``; softcap and temperature as the forward's)."""
    out = torch.empty_like(x)
    _cross_entropy_grad(
        out, x, target, prob, weight, shift, sum_exp, mass, coef, ignore_index, eps,
        softcap, temperature, lse_coef, ent_coef, ent_sum,
    )  # fmt: skip
    return out


@cross_entropy_rows_backward.register_fake
def _(
    x,
    target,
    prob,
    weight,
    shift,
    sum_exp,
    mass,
    coef,
    ignore_index,
    eps,
    softcap=0.0,
    temperature=1.0,
    lse_coef=None,
    ent_coef=None,
    ent_sum=None,
):
    return torch.empty_like(x)


@native_op(mutates_args=("out",))
def cross_entropy_rows_backward_into(
    out: torch.Tensor,
    x: torch.Tensor,
    target: torch.Tensor | None,
    prob: torch.Tensor | None,
    weight: torch.Tensor | None,
    shift: torch.Tensor,
    sum_exp: torch.Tensor,
    mass: torch.Tensor | None,
    coef: torch.Tensor,
    ignore_index: int,
    eps: float,
    softcap: float = 0.0,
    temperature: float = 1.0,
    lse_coef: torch.Tensor | None = None,
    ent_coef: torch.Tensor | None = None,
    ent_sum: torch.Tensor | None = None,
) -> None:
    """``cross_entropy_rows_backward`` written into ``out``: the forward's gradient buffer, or the logits
    ``x`` themselves (each row is read before it is written)."""
    torch.autograd.graph.increment_version(out)  # a write autograd must see: saved uses of x then fail loudly
    _cross_entropy_grad(
        out, x, target, prob, weight, shift, sum_exp, mass, coef, ignore_index, eps,
        softcap, temperature, lse_coef, ent_coef, ent_sum,
    )  # fmt: skip


@cross_entropy_rows_backward_into.register_fake
def _(
    out,
    x,
    target,
    prob,
    weight,
    shift,
    sum_exp,
    mass,
    coef,
    ignore_index,
    eps,
    softcap=0.0,
    temperature=1.0,
    lse_coef=None,
    ent_coef=None,
    ent_sum=None,
):
    return None


@native_op()
def softmax_rows(x: torch.Tensor, log: bool) -> torch.Tensor:
    """softmax (or log_softmax) of each row of the last dim."""
    out = torch.empty_like(x)
    rows, classes = _rows(x)
    status = _handle().crossent_softmax(
        DTYPES[x.dtype], int(log), 0, x.data_ptr(), None, out.data_ptr(), rows, classes, torch.get_num_threads()
    )
    _checked(status)
    return out


@softmax_rows.register_fake
def _(x, log):
    return torch.empty_like(x)


@native_op()
def softmax_rows_backward(grad_output: torch.Tensor, y: torch.Tensor, log: bool) -> torch.Tensor:
    """The gradient of ``softmax_rows`` from its output ``y``."""
    out = torch.empty_like(y)
    rows, classes = _rows(y)
    status = _handle().crossent_softmax(
        DTYPES[y.dtype], int(log), 1, grad_output.data_ptr(), y.data_ptr(), out.data_ptr(), rows, classes,
        torch.get_num_threads(),
    )  # fmt: skip
    _checked(status)
    return out


@softmax_rows_backward.register_fake
def _(grad_output, y, log):
    return torch.empty_like(y)


def _period(operand: torch.Tensor | None) -> int:
    return 0 if operand is None else operand.numel()


@native_op()
def elementwise_loss(
    op: str,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    log_target: bool,
    per_element: bool,
) -> torch.Tensor:
    """The loss of each element (``per_element``, in x's dtype), or their float32 sum.

    ``weight`` and ``pos_weight`` are float32 and repeat every ``numel`` elements."""
    out = torch.empty_like(x) if per_element else torch.empty((), dtype=torch.float32)
    status = _handle().crossent_elementwise(
        ELEMENTWISE[op], DTYPES[x.dtype], x.numel(), x.data_ptr(), y.data_ptr(), _ptr(weight), _period(weight),
        _ptr(pos_weight), _period(pos_weight), int(log_target), None, 0.0,
        out.data_ptr() if per_element else None, None if per_element else out.data_ptr(), None, None,
        torch.get_num_threads(),
    )  # fmt: skip
    if status in (2, 3):
        raise RuntimeError(f"all elements of {'input' if status == 2 else 'target'} should be between 0 and 1")
    _checked(status)
    return out


@elementwise_loss.register_fake
def _(op, x, y, weight, pos_weight, log_target, per_element):
    return torch.empty_like(x) if per_element else x.new_empty((), dtype=torch.float32)


@native_op()
def elementwise_grad(
    op: str,
    x: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    pos_weight: torch.Tensor | None,
    log_target: bool,
    grad_output: torch.Tensor,
    need_x: bool,
    need_y: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of ``elementwise_loss`` for x and y (empty when not needed); ``grad_output`` is
    a 0-dim upstream gradient per element, or one of x's shape and dtype."""
    gx = torch.empty_like(x) if need_x else x.new_empty(0)
    gy = torch.empty_like(y) if need_y else y.new_empty(0)
    scalar = grad_output.dim() == 0
    status = _handle().crossent_elementwise(
        ELEMENTWISE[op], DTYPES[x.dtype], x.numel(), x.data_ptr(), y.data_ptr(), _ptr(weight), _period(weight),
        _ptr(pos_weight), _period(pos_weight), int(log_target), None if scalar else grad_output.data_ptr(),
        float(grad_output) if scalar else 0.0, None, None, gx.data_ptr() if need_x else None,
        gy.data_ptr() if need_y else None, torch.get_num_threads(),
    )  # fmt: skip
    _checked(status)
    return gx, gy


@elementwise_grad.register_fake
def _(op, x, y, weight, pos_weight, log_target, grad_output, need_x, need_y):
    return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(y) if need_y else y.new_empty(0))


@native_op()
def nll_loss_rows(
    z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability rows ``(N, C)``: the loss of each row ``(N,)`` and the total target weight."""
    rows, classes = _rows(z)
    loss = torch.empty(rows, dtype=torch.float32)
    total_weight = torch.empty((), dtype=torch.float32)
    weight32, bad = _float32(weight), ctypes.c_int64()
    status = _handle().crossent_nll_loss(
        DTYPES[z.dtype], z.data_ptr(), rows, classes, target.data_ptr(), ignore_index, _ptr(weight32),
        loss.data_ptr(), total_weight.data_ptr(), ctypes.byref(bad),
    )  # fmt: skip
    if status == 1:
        raise IndexError(f"Target {bad.value} is out of bounds.")
    return loss, total_weight


@nll_loss_rows.register_fake
def _(z, target, weight, ignore_index):
    return z.new_empty(z.shape[0], dtype=torch.float32), z.new_empty((), dtype=torch.float32)


@native_op()
def nll_loss_rows_backward(
    z: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, ignore_index: int, coef: torch.Tensor
) -> torch.Tensor:
    """The gradient of ``nll_loss_rows`` for ``coef_n = d output / d l_n`` (0-dim, or one per row)."""
    rows, classes = _rows(z)
    out = torch.empty(z.shape, dtype=z.dtype)
    weight32, coef32 = _float32(weight), _float32(coef)
    assert coef32 is not None
    _handle().crossent_nll_loss_grad(
        DTYPES[z.dtype], out.data_ptr(), rows, classes, target.data_ptr(), ignore_index, _ptr(weight32),
        coef32.data_ptr(), 1 if coef32.dim() else 0, torch.get_num_threads(),
    )  # fmt: skip
    return out


@nll_loss_rows_backward.register_fake
def _(z, target, weight, ignore_index, coef):
    return torch.empty(z.shape, dtype=z.dtype, device=z.device)
