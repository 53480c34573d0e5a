"""Language-model options of ``crossent.linear_cross_entropy``: every option, the statistics and the causal shift."""

from __future__ import annotations

import pytest
import torch

import crossent
from fused.test_memory import _cpu_allocations
from helpers import assert_close
from lm_reference import reference

OPTIONS = [
    {"softcap": 2.0},
    {"temperature": 0.6},
    {"z_loss": 0.2},
    {"softcap": 3.0, "temperature": 1.3, "z_loss": 0.05},
]
F64 = torch.float64


def problem(batch: tuple[int, ...], hidden: int, classes: int, ignored: bool) -> tuple[torch.Tensor, ...]:
    h = torch.randn(*batch, hidden, dtype=F64, requires_grad=True)
    w = (torch.randn(classes, hidden, dtype=F64) * 0.7).requires_grad_()
    b = torch.randn(classes, dtype=F64, requires_grad=True)
    y = torch.randint(0, classes, batch)
    if ignored:
        y.view(-1)[::3] = -100
    return h, w, b, y


def leaves(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.detach().clone().requires_grad_() for t in tensors]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("chunk_size", [3, 64])
def test_values_statistics_and_gradients(
    options: dict[str, float], reduction: str, weighted: bool, chunk_size: int
) -> None:
    h, w, b, y = problem((10,), 6, 9, ignored=True)
    weight = torch.rand(9, dtype=F64) + 0.5 if weighted else None
    extra = {"weight": weight, "label_smoothing": 0.1, "reduction": reduction}
    loss, stats = crossent.linear_cross_entropy(
        h, w, y, linear_bias=b, chunk_size=chunk_size, return_stats=True, **extra, **options
    )
    h2, w2, b2 = leaves(h, w, b)
    ref = reference(h2 @ w2.t() + b2, y, **extra, **options)  # type: ignore[arg-type]
    for name in ("lse", "entropy", "z_loss"):
        assert_close(getattr(stats, name), getattr(ref, name), name, 1e-12, 1e-10)
    assert_close(loss, ref.loss, "loss", 1e-12, 1e-10)
    assert_close(stats.accuracy, ref.accuracy, "accuracy", 0, 0)
    upstream = [torch.randn_like(t) for t in (ref.loss, ref.lse, ref.entropy)]
    ours = sum((g * t).sum() for g, t in zip(upstream, (loss, stats.lse, stats.entropy), strict=True))
    theirs = sum((g * t).sum() for g, t in zip(upstream, ref[:3], strict=True))
    for name, a, e in zip(
        "hWb", torch.autograd.grad(ours, (h, w, b)), torch.autograd.grad(theirs, (h2, w2, b2)), strict=True
    ):
        assert_close(a, e, f"gradient of {name}", 1e-12, 1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets_with_options(reduction: str) -> None:
    h, w, b, _ = problem((7,), 5, 6, ignored=False)
    t = torch.rand(7, 6, dtype=F64).softmax(1)
    options = {"softcap": 2.5, "temperature": 0.9, "z_loss": 0.1}
    loss, stats = crossent.linear_cross_entropy(
        h, w, t, linear_bias=b, reduction=reduction, chunk_size=3, return_stats=True, **options
    )
    h2, w2, b2 = leaves(h, w, b)
    ref = reference(h2 @ w2.t() + b2, t, reduction=reduction, **options)
    assert_close(loss, ref.loss, "loss", 1e-12, 1e-10)
    assert stats.accuracy is None
    total = loss.sum() + stats.entropy.sum()
    expected = ref.loss.sum() + ref.entropy.sum()
    for a, e in zip(torch.autograd.grad(total, (h, w, b)), torch.autograd.grad(expected, (h2, w2, b2)), strict=True):
        assert_close(a, e, "gradient", 1e-12, 1e-10)


@pytest.mark.parametrize("shift", [1, 3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_causal_shift_equals_shifting_the_logits_and_labels(shift: int, reduction: str) -> None:
    """Position ``t`` predicts label ``t + shift``; the last ``shift`` positions of each sequence are ignored."""
    h, w, b, y = problem((3, 5), 4, 7, ignored=True)
    options = {"softcap": 3.0, "z_loss": 0.1}
    loss, stats = crossent.linear_cross_entropy(
        h, w, y, linear_bias=b, shift=shift, reduction=reduction, chunk_size=4, return_stats=True, **options
    )
    h2, w2, b2 = leaves(h, w, b)
    logits = (h2 @ w2.t() + b2)[:, :-shift]  # (B, T - shift, V)
    ref = reference(logits.transpose(1, 2), y[:, shift:], reduction=reduction, **options)

    def padded(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t.new_zeros(3, shift)], 1)

    expected_loss = padded(ref.loss) if reduction == "none" else ref.loss
    assert_close(loss, expected_loss, "loss", 1e-12, 1e-10)
    assert_close(stats.lse, padded(ref.lse), "lse", 1e-12, 1e-10)
    assert_close(stats.entropy, padded(ref.entropy), "entropy", 1e-12, 1e-10)
    assert_close(stats.accuracy, ref.accuracy, "accuracy", 0, 0)
    g = torch.randn_like(expected_loss)
    total = (g * loss).sum() + stats.entropy.sum()
    expected = (g * expected_loss).sum() + ref.entropy.sum()
    for a, e in zip(torch.autograd.grad(total, (h, w, b)), torch.autograd.grad(expected, (h2, w2, b2)), strict=True):
        assert_close(a, e, "gradient", 1e-12, 1e-10)


def test_the_rl_recipe_log_probabilities_and_entropy_from_hidden_states() -> None:
    """``logprob = -loss`` per token at temperature ``T``, and the entropy bonus, without logits."""
    h, w, _, y = problem((2, 6), 8, 11, ignored=False)
    advantages = torch.randn(2, 6, dtype=F64)
    loss, stats = crossent.linear_cross_entropy(h, w, y, reduction="none", temperature=0.7, return_stats=True)
    objective = -(advantages * -loss).mean() - 0.01 * stats.entropy.mean()
    objective.backward()
    h2, w2 = leaves(h, w)
    logprobs = torch.log_softmax((h2 @ w2.t()) / 0.7, -1)
    token_logprob = logprobs.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    (-(advantages * token_logprob).mean() - 0.01 * entropy.mean()).backward()
    assert_close(-loss.detach(), token_logprob.detach(), "log-probabilities", 1e-12, 1e-10)
    assert_close(h.grad, h2.grad, "gradient of h", 1e-12, 1e-10)
    assert_close(w.grad, w2.grad, "gradient of W", 1e-12, 1e-10)


def test_compile_fullgraph_with_options_and_shift() -> None:
    h = torch.randn(2, 5, 4, requires_grad=True)
    w = torch.randn(7, 4, requires_grad=True)
    y = torch.randint(0, 7, (2, 5))

    def step(h: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, stats = crossent.linear_cross_entropy(
            h, w, y, shift=1, softcap=3.0, z_loss=0.1, return_stats=True, chunk_size=3
        )
        return loss, stats.entropy

    eager = step(h, w)
    grads = torch.autograd.grad(eager[0] + eager[1].sum(), (h, w))
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")(h, w)
    grads_c = torch.autograd.grad(compiled[0] + compiled[1].sum(), (h, w))
    for a, e in zip((*compiled, *grads_c), (*eager, *grads), strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize(
    ("shape", "shift", "labels", "message"),
    [
        ((4, 3), 1, (4,), r"shift needs hidden states \(B, T, H\)"),
        ((2, 4, 3), 4, (2, 4), r"shift must be in \[0, T\) for T = 4"),
        ((2, 4, 3), -1, (2, 4), "shift must be in"),
    ],
)
def test_bad_shifts_are_named(shape: tuple[int, ...], shift: int, labels: tuple[int, ...], message: str) -> None:
    h, w = torch.randn(shape), torch.randn(5, shape[-1])
    with pytest.raises(ValueError, match=message):
        crossent.linear_cross_entropy(h, w, torch.zeros(labels, dtype=torch.long), shift=shift)


def test_shift_refuses_probability_targets_and_non_integers() -> None:
    h, w = torch.randn(2, 4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match="class-index labels"):
        crossent.linear_cross_entropy(h, w, torch.rand(2, 4, 5).softmax(-1), shift=1)
    with pytest.raises(TypeError, match="shift must be an int"):
        crossent.linear_cross_entropy(h, w, torch.zeros(2, 4, dtype=torch.long), shift=1.0)  # type: ignore[call-overload]


def test_memory_contract_holds_with_every_option() -> None:
    """No (N x V) buffer, and the peak stays within the gradients plus the workspace budget."""
    n, hidden, v, budget = 256, 16, 2048, 128 << 10
    h = torch.randn(n, hidden, requires_grad=True)
    w = (torch.randn(v, hidden) / 4).requires_grad_()
    y = torch.randint(0, v, (n,))

    def step() -> None:
        loss, stats = crossent.linear_cross_entropy(
            h, w, y, softcap=30.0, temperature=1.2, z_loss=1e-4, return_stats=True, workspace_bytes=budget
        )
        (loss - 0.01 * stats.entropy.mean()).backward()

    largest, peak = _cpu_allocations(step)
    gradients = (h.numel() + w.numel()) * 4
    assert largest <= max(budget, w.numel() * 4)
    assert peak <= 2 * gradients + 2 * budget < n * v * 4 // 2


def test_under_autocast_with_options_and_shift() -> None:
    """Under CPU autocast the matmuls run in bfloat16 and the loss with its options in float32."""
    h = torch.randn(2, 6, 16, requires_grad=True)
    w = torch.randn(40, 16, requires_grad=True)
    y = torch.randint(0, 40, (2, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = crossent.linear_cross_entropy(h, w, y, shift=1, softcap=5.0, z_loss=0.01, return_stats=True)
    assert loss.dtype == torch.float32 and stats.entropy.dtype == torch.float32
    (loss + stats.entropy.mean()).backward()
    logits = (h.detach().bfloat16() @ w.detach().bfloat16().t()).float()[:, :-1].transpose(1, 2)
    expected = reference(logits.double(), y[:, 1:], softcap=5.0, z_loss=0.01).loss
    torch.testing.assert_close(loss.double(), expected, atol=2e-2, rtol=2e-2)
    assert h.grad is not None and torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()
