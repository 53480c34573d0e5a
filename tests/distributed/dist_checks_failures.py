"""Multi-rank checks that bad input on one rank, ranks that disagree, and double backward fail every
rank promptly and clearly, instead of hanging it, aborting it, or returning a wrong result.

Every check ends with the ranks in step (every rank raised after the same collective), so the next
check can use the process group again; ``check_group_still_works`` proves it at the end. The tables
below are the variants ``test_rank_agreement`` turns into one pytest test each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from dist_cases import LAYOUTS, generator, rank, shard, world
from dist_harness import Check

import crossent
from crossent.distributed import (
    PeerError,
    _group,
    count_targets,
    vocab_parallel_cross_entropy,
    vocab_parallel_linear_cross_entropy,
    vocab_range,
)

WIDTHS = {1: [7], 2: [4, 3], 3: [3, 2, 2]}
HIDDEN = 3
Args = dict[str, Any]


def expect(error: type[Exception], pattern: str, call: Callable[[], object]) -> None:
    """``call()`` raises exactly ``error`` (not a subclass) with a message matching ``pattern``."""
    try:
        call()
    except Exception as exc:
        if type(exc) is not error:
            raise AssertionError(f"expected {error.__name__}({pattern!r}), got {type(exc).__name__}: {exc}") from exc
        assert re.search(pattern, str(exc)), f"{error.__name__} message {str(exc)!r} does not match {pattern!r}"
        return
    raise AssertionError(f"expected {error.__name__}({pattern!r}), nothing was raised")


def last() -> bool:
    return rank() == world() - 1


def width() -> int:
    return WIDTHS[world()][rank()]


def logits() -> torch.Tensor:
    return shard(torch.randn(4, 7, dtype=torch.float64, generator=generator(7)), WIDTHS[world()], 1)


def peer_fails(error: type[Exception], pattern: str, call: Callable[[], object]) -> None:
    """The last rank raises ``error``; every other rank raises PeerError naming it."""
    if last():
        expect(error, pattern, call)
    else:
        expect(PeerError, rf"rank\(s\) \[{world() - 1}\]", call)


# ---- the losses the variants call: default arguments (valid on every rank), the call, torch's equivalent


@dataclass(frozen=True)
class Loss:
    args: Callable[[], Args]
    call: Callable[[dist.ProcessGroup, Args], object]
    torch: Callable[[Args], object] | None = None  # the same arguments on one process, for torch's error


def _cross_entropy_args() -> Args:
    # class ids below every shard's width, so that torch accepts them on the shard alone
    return {
        "input": logits(),
        "target": torch.tensor([0, 1, 1, 0]),
        "weight": None,
        "ignore_index": -100,
        "reduction": "mean",
        "label_smoothing": 0.0,
        "normalizer": None,
        **LM_OPTIONS,
    }


LM_OPTIONS = {"softcap": None, "temperature": 1.0, "z_loss": 0.0}


def _cross_entropy(pg: dist.ProcessGroup, a: Args) -> torch.Tensor:
    return vocab_parallel_cross_entropy(
        a["input"],
        a["target"],
        a["weight"],
        a["ignore_index"],
        a["reduction"],
        a["label_smoothing"],
        process_group=pg,
        normalizer=a["normalizer"],
        **{k: a[k] for k in LM_OPTIONS},
    )


def _torch_cross_entropy(a: Args) -> torch.Tensor:
    return F.cross_entropy(
        a["input"],
        a["target"],
        a["weight"],
        ignore_index=a["ignore_index"],
        reduction=a["reduction"],
        label_smoothing=a["label_smoothing"],
    )


def _linear_args() -> Args:
    return {
        "input": torch.randn(4, HIDDEN, dtype=torch.float64, generator=generator(9)),
        "linear_weight": shard(
            torch.randn(7, HIDDEN, dtype=torch.float64, generator=generator(10)), WIDTHS[world()], 0
        ),
        "target": torch.tensor([0, 1, 1, 0]),
        "linear_bias": None,
        "weight": None,
        "reduction": "mean",
        "ignore_index": None,
        "label_smoothing": 0.0,
        "normalizer": None,
        "reduce_input_grad": True,
        "chunk_size": None,
        "shift": 0,
        **LM_OPTIONS,
    }


def _linear(pg: dist.ProcessGroup, a: Args) -> torch.Tensor:
    return vocab_parallel_linear_cross_entropy(
        a["input"],
        a["linear_weight"],
        a["target"],
        linear_bias=a["linear_bias"],
        weight=a["weight"],
        reduction=a["reduction"],
        ignore_index=a["ignore_index"],
        label_smoothing=a["label_smoothing"],
        process_group=pg,
        normalizer=a["normalizer"],
        reduce_input_grad=a["reduce_input_grad"],
        chunk_size=a["chunk_size"],
        shift=a["shift"],
        **{k: a[k] for k in LM_OPTIONS},
    )


def _torch_linear(a: Args) -> torch.Tensor:
    return F.cross_entropy(
        F.linear(a["input"], a["linear_weight"], a["linear_bias"]),
        a["target"],
        a["weight"],
        ignore_index=-100 if a["ignore_index"] is None else a["ignore_index"],
        reduction=a["reduction"],
        label_smoothing=a["label_smoothing"],
    )


def _count_args() -> Args:
    return {"target": torch.tensor([0, 1, 2, 1]), "ignore_index": -100, "weight": torch.ones(3, dtype=torch.float64)}


def _count(pg: dist.ProcessGroup, a: Args) -> torch.Tensor:
    return count_targets(a["target"], a["ignore_index"], a["weight"], process_group=pg)


LOSSES = {
    "cross_entropy": Loss(_cross_entropy_args, _cross_entropy, _torch_cross_entropy),
    "linear": Loss(_linear_args, _linear, _torch_linear),
    "count_targets": Loss(_count_args, _count),
    "vocab_range": Loss(lambda: {"local_classes": width()}, lambda pg, a: vocab_range(a["local_classes"], pg)),
}


def _set(**changes: Callable[[Args], object] | object) -> Callable[[Args], Args]:
    """The arguments with some replaced; a callable computes the new value from the old arguments."""
    return lambda a: {**a, **{k: v(a) if callable(v) else v for k, v in changes.items()}}


# ---- bad input on the last rank: it raises torch's exception, every other rank PeerError


@dataclass(frozen=True)
class BadInput:
    loss: str
    change: Callable[[Args], Args]
    error: type[Exception]
    pattern: str  # the message names the offending value or shape
    like_torch: bool = True  # torch's own functions raise ``error`` for these arguments on one process


def _meta(t: torch.Tensor) -> torch.Tensor:
    return t.to("meta")


BAD_INPUTS = {
    "input_not_a_tensor": BadInput(
        "cross_entropy", _set(input=lambda a: a["input"].tolist()), TypeError, r"'input' .* must be Tensor, not list"
    ),
    "input_none": BadInput("cross_entropy", _set(input=None), TypeError, "must be Tensor, not NoneType"),
    "input_0d": BadInput(
        "cross_entropy", _set(input=lambda a: a["input"][0, 0]), IndexError, r"expected to be in range of \[-1, 0\]"
    ),
    "input_1d": BadInput(
        "cross_entropy", _set(input=lambda a: a["input"][0]), ValueError, "1D target must have size 1, .* size: 4"
    ),
    "input_extra_dim": BadInput(
        "cross_entropy",
        _set(input=lambda a: a["input"].unsqueeze(2).expand(-1, -1, 2)),
        RuntimeError,
        r"Expected target size \[4, 2\], got \[4\]",
    ),
    "input_integer": BadInput(
        "cross_entropy", _set(input=lambda a: a["input"].long()), NotImplementedError, "not implemented for 'Long'"
    ),
    "input_complex": BadInput(
        "cross_entropy",
        _set(input=lambda a: a["input"].to(torch.complex128)),
        NotImplementedError,
        "not implemented for 'ComplexDouble'",
    ),
    "target_not_a_tensor": BadInput(
        "cross_entropy", _set(target=[0, 1, 1, 0]), TypeError, r"'target' .* must be Tensor, not list"
    ),
    "target_0d": BadInput(
        "cross_entropy", _set(target=torch.tensor(0)), ValueError, r"input batch_size \(4\) .* batch_size \(0\)"
    ),
    "target_batch_size": BadInput(
        "cross_entropy",
        _set(target=torch.tensor([0, 1, 1, 0, 1])),
        ValueError,
        r"input batch_size \(4\) .* batch_size \(5\)",
    ),
    "target_2d": BadInput(
        "cross_entropy",
        _set(target=lambda a: a["target"].view(4, 1).expand(4, width() + 1)),
        RuntimeError,
        "multi-target not supported",
    ),
    "target_float_ids": BadInput(
        "cross_entropy", _set(target=lambda a: a["target"].double()), RuntimeError, "Long or Byte, but got Double"
    ),
    "target_int32_ids": BadInput(
        "cross_entropy", _set(target=lambda a: a["target"].int()), RuntimeError, "Long or Byte, but got Int"
    ),
    "target_integer_probabilities": BadInput(
        "cross_entropy",
        _set(target=lambda a: a["input"].long()),
        RuntimeError,
        "floating point type for target with class probabilities, got Long",
    ),
    "target_on_another_device": BadInput(
        "cross_entropy", _set(target=lambda a: _meta(a["target"])), RuntimeError, "target is on meta"
    ),
    "ignore_index_with_probabilities": BadInput(
        "cross_entropy",
        _set(target=lambda a: a["input"].softmax(1), ignore_index=1),
        RuntimeError,
        "ignore_index is not supported for floating point target",
    ),
    "weight_not_a_tensor": BadInput(
        "cross_entropy", _set(weight=lambda a: [1.0] * width()), TypeError, r"'weight' .* must be Tensor, not list"
    ),
    "weight_one_class_too_many": BadInput(
        "cross_entropy",
        _set(weight=lambda a: torch.ones(width() + 1, dtype=torch.float64)),
        RuntimeError,
        r"this rank's slice .* got weight tensor of shape: \[\d+\]",
    ),
    "weight_2d": BadInput(
        "cross_entropy",
        _set(weight=lambda a: torch.ones(1, width(), dtype=torch.float64)),
        RuntimeError,
        r"got weight tensor of shape: \[1, \d+\]",
    ),
    "weight_dtype": BadInput(
        "cross_entropy",
        _set(weight=lambda a: torch.ones(width())),
        RuntimeError,
        "expected scalar type Double but found Float",
    ),
    "weight_requires_grad": BadInput(
        "cross_entropy",
        _set(weight=lambda a: torch.ones(width(), dtype=torch.float64, requires_grad=True)),
        RuntimeError,
        "not differentiable with respect to argument 'weight'",
    ),
    "weight_on_another_device": BadInput(
        "cross_entropy",
        _set(weight=lambda a: torch.ones(width(), dtype=torch.float64, device="meta")),
        RuntimeError,
        "weight is on meta",
    ),
    "softcap_zero": BadInput(
        "cross_entropy", _set(softcap=0.0), ValueError, r"softcap must be a finite number > 0, got 0.0", False
    ),
    "temperature_negative": BadInput(
        "linear", _set(temperature=-1.0), ValueError, r"temperature must be a finite number > 0, got -1.0", False
    ),
    "z_loss_negative": BadInput(
        "cross_entropy", _set(z_loss=-0.5), ValueError, r"z_loss must be a finite number >= 0, got -0.5", False
    ),
    "shift_with_2d_input": BadInput(
        "linear", _set(shift=1), ValueError, r"shift needs hidden states \(B, T, H\)", False
    ),
    "ignore_index_not_an_int": BadInput(
        "cross_entropy", _set(ignore_index="x"), TypeError, r"'ignore_index' .* must be int, not str"
    ),
    "ignore_index_float": BadInput(
        "cross_entropy", _set(ignore_index=1.5), TypeError, r"'ignore_index' .* must be int, not float"
    ),
    "reduction_unknown": BadInput(
        "cross_entropy", _set(reduction="average"), ValueError, "average is not a valid value for reduction"
    ),
    "label_smoothing_above_1": BadInput(
        "cross_entropy", _set(label_smoothing=1.5), RuntimeError, r"between 0.0 and 1.0. Got: 1.5"
    ),
    "label_smoothing_not_a_number": BadInput(
        "cross_entropy", _set(label_smoothing="0.1"), TypeError, r"'label_smoothing' .* must be float, not str"
    ),
    "normalizer_not_a_number": BadInput(
        "cross_entropy", _set(normalizer="4"), TypeError, "normalizer must be a number or a Tensor, not str", False
    ),
    "normalizer_two_values": BadInput(
        "cross_entropy", _set(normalizer=torch.ones(2)), ValueError, r"one value, .* shape \[2\]", False
    ),
    "normalizer_with_reduction_none": BadInput(
        "cross_entropy", _set(normalizer=4, reduction="none"), ValueError, "not 'none'", False
    ),
    "linear_input_not_a_tensor": BadInput(
        "linear", _set(input=lambda a: a["input"].tolist()), TypeError, r"'input' .* must be Tensor, not list"
    ),
    "linear_input_0d": BadInput(
        "linear", _set(input=torch.tensor(1.0, dtype=torch.float64)), RuntimeError, "dimensionality 1 or more, got 0"
    ),
    "linear_weight_not_a_tensor": BadInput(
        "linear",
        _set(linear_weight=lambda a: a["linear_weight"].tolist()),
        TypeError,
        r"'linear_weight' .* must be Tensor, not list",
    ),
    "linear_weight_1d": BadInput(
        "linear",
        _set(linear_weight=lambda a: a["linear_weight"][0]),
        RuntimeError,
        "linear_weight with dimensionality at least 2, got 1",
        False,
    ),
    "linear_weight_3d": BadInput(
        "linear",
        _set(linear_weight=lambda a: a["linear_weight"].unsqueeze(1).expand(-1, 2, -1)),
        RuntimeError,
        r"classifier rows \(V_r, H\), got shape \[\d+, 2, 3\]",
        False,
    ),
    "linear_hidden_size": BadInput(
        "linear",
        _set(linear_weight=lambda a: torch.ones(width(), HIDDEN + 1, dtype=torch.float64)),
        RuntimeError,
        r"last dimensions \(in_features\), got 3 and 4",
    ),
    "linear_weight_dtype": BadInput(
        "linear",
        _set(linear_weight=lambda a: a["linear_weight"].float()),
        RuntimeError,
        "expected m1 and m2 to have the same dtype, but got: double != float",
    ),
    "linear_bias_shape": BadInput(
        "linear",
        _set(linear_bias=lambda a: torch.zeros(width() + 1, dtype=torch.float64)),
        RuntimeError,
        r"expected linear_bias shape \(\d+,\), got \(\d+,\)",
    ),
    "linear_bias_dtype": BadInput(
        "linear",
        _set(linear_bias=lambda a: torch.zeros(width())),
        RuntimeError,
        "self and mat2 must have the same dtype, but got Float and Double",
    ),
    "linear_target_shape": BadInput(
        "linear", _set(target=torch.tensor([0, 1, 1, 0, 1])), ValueError, r"input batch_size \(4\) .* batch_size \(5\)"
    ),
    "linear_target_shape_3d_input": BadInput(
        "linear",
        _set(input=lambda a: a["input"].view(2, 2, HIDDEN), target=torch.tensor([0, 1, 1])),
        ValueError,
        r"Expected target of shape \(2, 2\) \(class indices\) .* got \(3,\)",
        False,
    ),
    "linear_target_not_a_tensor": BadInput(
        "linear", _set(target=[0, 1, 1, 0]), TypeError, r"'target' .* must be Tensor, not list"
    ),
    "linear_target_float_ids": BadInput(
        "linear", _set(target=lambda a: a["target"].double()), RuntimeError, "Long or Byte, but got Double"
    ),
    "linear_target_on_another_device": BadInput(
        "linear", _set(target=lambda a: _meta(a["target"])), RuntimeError, "target is on meta", False
    ),
    "linear_class_weight_shape": BadInput(
        "linear",
        _set(weight=lambda a: torch.ones(width() + 1, dtype=torch.float64)),
        RuntimeError,
        "this rank's slice of the class weights",
    ),
    "linear_chunk_size": BadInput(
        "linear", _set(chunk_size=0), ValueError, "chunk_size must be a positive int, got 0", False
    ),
    "linear_reduce_input_grad_not_a_bool": BadInput(
        "linear", _set(reduce_input_grad="yes"), TypeError, "reduce_input_grad must be bool, not str", False
    ),
    "linear_reduction_unknown": BadInput(
        "linear", _set(reduction="average"), ValueError, "average is not a valid value for reduction"
    ),
    "linear_normalizer_not_a_number": BadInput(
        "linear", _set(normalizer="4"), TypeError, "normalizer must be a number or a Tensor, not str", False
    ),
    "count_targets_float_target": BadInput(
        "count_targets", _set(target=lambda a: a["target"].double()), TypeError, "integer dtype", False
    ),
    "count_targets_target_not_a_tensor": BadInput(
        "count_targets", _set(target=[0, 1]), TypeError, "must be Tensor, not list", False
    ),
    "count_targets_weight_not_a_tensor": BadInput(
        "count_targets", _set(weight=[1.0, 1.0, 1.0]), TypeError, "must be Tensor, not list", False
    ),
    "count_targets_weight_2d": BadInput(
        "count_targets",
        _set(weight=torch.ones(1, 3, dtype=torch.float64)),
        ValueError,
        r"1-D floating tensor \(C,\), got torch.float64 \[1, 3\]",
        False,
    ),
    "count_targets_target_out_of_range": BadInput(
        "count_targets", _set(target=torch.tensor([0, 5])), IndexError, "Target 5 is out of bounds", False
    ),
    "count_targets_ignore_index_not_an_int": BadInput(
        "count_targets", _set(ignore_index="x"), TypeError, "must be int, not str", False
    ),
    "vocab_range_negative": BadInput(
        "vocab_range", _set(local_classes=-1), ValueError, "non-negative int, got -1", False
    ),
    "vocab_range_not_an_int": BadInput(
        "vocab_range", _set(local_classes="3"), ValueError, "non-negative int, got '3'", False
    ),
}


def check_bad_input(variant: BadInput) -> Check:
    def check(pg: dist.ProcessGroup) -> None:
        loss = LOSSES[variant.loss]
        args = variant.change(loss.args()) if last() else loss.args()
        peer_fails(variant.error, variant.pattern, lambda: loss.call(pg, args))
        if last() and variant.like_torch:
            assert loss.torch is not None
            reference = loss.torch
            expect(variant.error, "", lambda: reference(args))

    return check


# ---- ranks that disagree: every rank raises ValueError naming what differs


@dataclass(frozen=True)
class Disagreement:
    loss: str
    change: Callable[[Args], Args]  # the last rank's arguments
    pattern: str
    base: Callable[[Args], Args] = lambda a: a  # every rank's arguments, before the change
    last_loss: str | None = None  # the loss the last rank calls, when not ``loss``


DISAGREEMENTS = {
    "reduction": Disagreement(
        "cross_entropy", _set(reduction="sum"), r"agree on reduction, but the ranks have \['mean', .*'sum'\]"
    ),
    "ignore_index": Disagreement(
        "cross_entropy", _set(ignore_index=3), r"agree on ignore_index, but the ranks have \[-100, .*3\]"
    ),
    "label_smoothing": Disagreement(
        "cross_entropy", _set(label_smoothing=0.1), r"agree on label_smoothing, but the ranks have \[0\.0, .*0\.1\]"
    ),
    "softcap": Disagreement(
        "cross_entropy", _set(softcap=5.0), r"agree on softcap, but the ranks have \[None, .*5\.0\]"
    ),
    "temperature": Disagreement(
        "linear", _set(temperature=2.0), r"agree on temperature, but the ranks have \[1\.0, .*2\.0\]"
    ),
    "z_loss": Disagreement(
        "cross_entropy", _set(z_loss=1e-4), r"agree on z_loss, but the ranks have \[0\.0, .*0\.0001\]"
    ),
    "weight_given": Disagreement(
        "cross_entropy",
        _set(weight=lambda a: torch.ones(width(), dtype=torch.float64)),
        r"agree on whether weight is given, but the ranks have \[None, .*weight\]",
    ),
    "normalizer_value": Disagreement(
        "cross_entropy",
        _set(normalizer=5),
        r"agree on the value of normalizer \(as float64\), but the ranks have \[4\.0, .*5\.0\]",
        _set(normalizer=4, reduction="sum"),
    ),
    "normalizer_tensor_value": Disagreement(
        "cross_entropy",
        _set(normalizer=torch.tensor(5.0)),
        r"the value of normalizer \(as float64\), but the ranks have \[4\.0, .*5\.0\]",
        _set(normalizer=torch.tensor(4.0)),
    ),
    "normalizer_given": Disagreement(
        "cross_entropy",
        _set(normalizer=4),
        r"agree on whether normalizer is given, but the ranks have \[None, .*normalizer\]",
        _set(reduction="sum"),
    ),
    "input_dtype": Disagreement(
        "cross_entropy",
        _set(input=lambda a: a["input"].float()),
        r"agree on the dtypes of input, .* differ from rank 0 .*this rank's are \(float(64|32), None, None\)",
    ),
    "target_kind": Disagreement(
        "cross_entropy",
        _set(target=lambda a: a["input"].softmax(1)),
        r"agree on the kind of target, but the ranks have \[class indices, .*class probabilities\]",
    ),
    "more_positions": Disagreement(
        "cross_entropy",
        _set(input=lambda a: torch.cat([a["input"], a["input"][:1]]), target=torch.tensor([0, 1, 1, 0, 1])),
        r"agree on the shape of input without its class dimension, but rank\(s\) \[\d\] differ .*\[[45]\]",
    ),
    "same_positions_other_shape": Disagreement(
        "cross_entropy",
        _set(input=lambda a: a["input"].view(2, 2, -1).transpose(1, 2), target=lambda a: a["target"].view(2, 2)),
        r"agree on the shape of input without its class dimension, .*this rank's is \[(4|2, 2)\]",
    ),
    "one_target": Disagreement(
        "cross_entropy",
        _set(target=torch.tensor([0, 1, 1, 1])),
        r"agree on the class-index targets .* rank\(s\) \[\d\] differ from rank 0 .* 64-bit digest",
    ),
    "function": Disagreement(
        "cross_entropy",
        lambda a: _linear_args(),
        r"agree on the function called, .*this rank called vocab_parallel_(linear_)?cross_entropy",
        last_loss="linear",
    ),
    "linear_reduce_input_grad": Disagreement(
        "linear", _set(reduce_input_grad=False), r"agree on reduce_input_grad, but the ranks have \[True, .*False\]"
    ),
    "linear_input_requires_grad": Disagreement(
        "linear",
        _set(input=lambda a: a["input"].detach()),
        r"agree on whether the input gradient is computed .* \[True, .*False\]",
        _set(input=lambda a: a["input"].requires_grad_()),
    ),
    "linear_hidden_size": Disagreement(
        "linear",
        _set(
            input=torch.ones(4, HIDDEN + 1, dtype=torch.float64, requires_grad=True),
            linear_weight=lambda a: torch.ones(width(), HIDDEN + 1, dtype=torch.float64),
        ),
        r"agree on the shape of input .*this rank's is \[4, [34]\]",
        _set(input=lambda a: a["input"].requires_grad_()),
    ),
    "linear_normalizer": Disagreement(
        "linear",
        _set(normalizer=5),
        r"the value of normalizer \(as float64\), but the ranks have \[4\.0, .*5\.0\]",
        _set(normalizer=4),
    ),
    "linear_targets": Disagreement(
        "linear", _set(target=torch.tensor([1, 1, 1, 0])), r"agree on the class-index targets .* 64-bit digest"
    ),
}


def check_disagreement(variant: Disagreement) -> Check:
    def check(pg: dist.ProcessGroup) -> None:
        loss = LOSSES[variant.loss]
        args = variant.base(loss.args())
        if last():
            args = variant.change(args)
            loss = LOSSES[variant.last_loss or variant.loss]
        expect(ValueError, variant.pattern, lambda: loss.call(pg, args))

    return check


# ---- what may differ between ranks: the same loss on every rank, torch's


AGREEMENTS: dict[str, tuple[str, Callable[[Args], Args], Callable[[Args], Args]]] = {
    # (loss, every rank's arguments, the last rank's change)
    "normalizer_number_and_tensor": (
        "cross_entropy",
        _set(normalizer=4, reduction="sum"),
        _set(normalizer=torch.tensor(4)),
    ),
    "label_smoothing_negative_and_zero": ("cross_entropy", lambda a: a, _set(label_smoothing=-0.5)),
    "class_ids_uint8_and_int64": ("cross_entropy", lambda a: a, _set(target=lambda a: a["target"].to(torch.uint8))),
    "bias_on_one_rank": ("linear", lambda a: a, _set(linear_bias=lambda a: torch.zeros(width(), dtype=torch.float64))),
}


def check_agreement(loss_name: str, base: Callable[[Args], Args], change: Callable[[Args], Args]) -> Check:
    def check(pg: dist.ProcessGroup) -> None:
        loss = LOSSES[loss_name]
        args = base(loss.args())
        reference = loss.call(pg, args)
        out = loss.call(pg, change(args) if last() else args)
        assert isinstance(out, torch.Tensor) and isinstance(reference, torch.Tensor)
        torch.testing.assert_close(out, reference, rtol=1e-15, atol=0)

    return check


# ---- targets that the previous 24-bit digest could not tell apart: (positions, classes, changes)

COLLISIONS = {
    # position: (class id on the other ranks, class id on the last rank)
    "swap_0_and_128_at_positions_0_and_65536": (65537, 129, {0: (0, 128), 65536: (128, 0)}),
    "swap_1_and_257_at_positions_0_and_32768": (32769, 258, {0: (1, 257), 32768: (257, 1)}),
    "swap_0_and_4096_at_positions_0_and_2048": (2049, 4097, {0: (0, 4096), 2048: (4096, 0)}),
    "opposite_shifts_by_128": (65538, 201, {1: (5, 133), 65537: (200, 72)}),
    "swap_ignored_and_28": (65537, 29, {0: (-100, 28), 65536: (28, -100)}),
}


def check_collision(positions: int, classes: int, changes: dict[int, tuple[int, int]]) -> Check:
    def check(pg: dist.ProcessGroup) -> None:
        widths = [len(part) for part in torch.tensor_split(torch.arange(classes), world())]
        x = torch.zeros(positions, widths[rank()])
        target = torch.zeros(positions, dtype=torch.int64)
        for position, (others, mine) in changes.items():
            target[position] = mine if last() else others
        expect(
            ValueError,
            "agree on the class-index targets",
            lambda: vocab_parallel_cross_entropy(x, target, process_group=pg),
        )

    return check


# ---- double backward: refused on every rank, with no rank left waiting


def _create_graph_inputs(loss_name: str, probability: bool) -> tuple[Callable[[], torch.Tensor], torch.Tensor]:
    """A loss whose input requires grad, and that input."""
    if loss_name == "cross_entropy":
        x = logits().requires_grad_()
        target = x.detach().softmax(1) if probability else torch.tensor([0, 6, 2, -100])
        return lambda: vocab_parallel_cross_entropy(x, target, label_smoothing=0.1, process_group=dist.group.WORLD), x
    if loss_name == "public_cross_entropy":
        x = logits().requires_grad_()
        return lambda: crossent.cross_entropy(x, torch.tensor([0, 6, 2, -100]), process_group=dist.group.WORLD), x
    a = _linear_args()
    h = a["input"].requires_grad_()
    rows = a["linear_weight"]
    target = (h.detach() @ rows.T).softmax(1) if probability else torch.tensor([0, 6, 2, -100])
    reduce = loss_name != "linear_input_grad_left_to_the_caller"
    return lambda: vocab_parallel_linear_cross_entropy(
        h, rows, target, process_group=dist.group.WORLD, reduce_input_grad=reduce
    ), h


CREATE_GRAPH = {
    "cross_entropy": ("cross_entropy", False),
    "cross_entropy_probabilities": ("cross_entropy", True),
    "public_cross_entropy": ("public_cross_entropy", False),
    "linear": ("linear", False),
    "linear_probabilities": ("linear", True),
    "linear_input_grad_left_to_the_caller": ("linear_input_grad_left_to_the_caller", False),
}
CREATE_GRAPH_ON_ONE_RANK = ("cross_entropy", "linear")
DOUBLE_BACKWARD = r"double backward \(create_graph=True\) is not supported"


def check_create_graph(loss_name: str, probability: bool) -> Check:
    """A gradient penalty needs the gradient's own graph: every rank refuses rather than drop the penalty."""

    def check(pg: dist.ProcessGroup) -> None:
        loss, x = _create_graph_inputs(loss_name, probability)
        expect(RuntimeError, DOUBLE_BACKWARD, lambda: torch.autograd.grad(loss(), x, create_graph=True))

    return check


def check_create_graph_on_one_rank(loss_name: str) -> Check:
    """Only the last rank asks for a double backward: it raises; the others get their gradient (the
    loss over logits has no collective in its backward) or, where the backward all-reduces the input
    gradient, raise PeerError instead of waiting for it."""

    def check(pg: dist.ProcessGroup) -> None:
        loss, x = _create_graph_inputs(loss_name, False)
        if last():
            expect(RuntimeError, DOUBLE_BACKWARD, lambda: torch.autograd.grad(loss(), x, create_graph=True))
        elif loss_name == "linear":
            expect(PeerError, rf"rank\(s\) \[{world() - 1}\] .* refused the backward", lambda: loss().backward())
        else:
            loss().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all()

    return check


# ---- single checks


def check_target_out_of_range_on_one_rank(pg: dist.ProcessGroup) -> None:
    """The rank with the bad id names it; the others see that the targets differ between ranks."""
    target = torch.tensor([0, 9 if last() else 1, 2, 3])
    call = lambda: vocab_parallel_cross_entropy(logits(), target, process_group=pg)  # noqa: E731
    if last():
        expect(IndexError, r"^Target 9 is out of bounds\.$", call)
    else:
        expect(ValueError, "agree on the class-index targets", call)


def check_target_out_of_range_everywhere(pg: dist.ProcessGroup) -> None:
    for bad in (-5, 7):
        target = torch.tensor([0, bad, -100, 3])
        expect(
            IndexError,
            rf"^Target {bad} is out of bounds\.$",
            lambda t=target: vocab_parallel_cross_entropy(logits(), t, label_smoothing=0.1, process_group=pg),
        )


def check_accelerator_path(pg: dist.ProcessGroup) -> None:
    """On accelerators the checks are device-side asserts (no host read); run that path on CPU, where
    torch._assert_async raises at once: every rank still fails, none waits."""
    saved = _group.reads_on_host
    _group.reads_on_host = lambda t: False
    try:
        weight = torch.ones(width() + 1 if last() else width(), dtype=torch.float64)
        call = lambda: vocab_parallel_cross_entropy(logits(), torch.tensor([0, 1, 1, 0]), weight, process_group=pg)  # noqa: E731
        if last():
            expect(RuntimeError, "weight must be this rank's slice", call)
        else:
            expect(RuntimeError, "a rank of the process group rejected their input", call)
        bad_input = [0.0] if last() else logits()
        call = lambda: vocab_parallel_cross_entropy(bad_input, torch.tensor([0, 1, 1, 0]), process_group=pg)  # noqa: E731
        expect(*((TypeError, "must be Tensor, not list") if last() else (RuntimeError, "rejected their input")), call)
        target = torch.tensor([0, 1, 1, 1 if last() else 0])
        expect(
            RuntimeError,
            "called with different shapes, options or targets",
            lambda: vocab_parallel_cross_entropy(logits(), target, process_group=pg),
        )
        bad = torch.tensor([0.0]) if last() else torch.tensor([0])
        expected = (TypeError, "integer dtype") if last() else (RuntimeError, "rejected their input")
        expect(*expected, lambda: count_targets(bad, process_group=pg))
    finally:
        _group.reads_on_host = saved


def check_group_still_works(pg: dist.ProcessGroup) -> None:
    """After all the failures above, the ranks are still in step."""
    for widths in LAYOUTS[world()]:
        x = shard(torch.randn(4, 7, dtype=torch.float64, generator=generator(8)), widths, 1)
        out = vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 2, 3]), process_group=pg)
        assert torch.isfinite(out)


SINGLE = [
    check_target_out_of_range_on_one_rank,
    check_target_out_of_range_everywhere,
    check_accelerator_path,
]


def checks() -> list[tuple[str, Check]]:
    return [
        *((f"bad_input[{name}]", check_bad_input(v)) for name, v in BAD_INPUTS.items()),
        *((f"disagreement[{name}]", check_disagreement(v)) for name, v in DISAGREEMENTS.items()),
        *((f"agreement[{name}]", check_agreement(*v)) for name, v in AGREEMENTS.items()),
        *((f"collision[{name}]", check_collision(*v)) for name, v in COLLISIONS.items()),
        *((f"create_graph[{name}]", check_create_graph(*v)) for name, v in CREATE_GRAPH.items()),
        *(
            (f"create_graph_on_one_rank[{name}]", check_create_graph_on_one_rank(name))
            for name in CREATE_GRAPH_ON_ONE_RANK
        ),
        *((f.__name__, f) for f in SINGLE),
        (check_group_still_works.__name__, check_group_still_works),
    ]
