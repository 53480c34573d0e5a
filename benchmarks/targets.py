"""What crossent promises on some cases, and whether a run's rows keep the promise.

A target names a case (op, shape, dtype) and bounds one figure of crossent's row in it: its
forward+backward time over torch's (``"time"``), or its forward+backward peak extra memory
(``"memory"``). Any run that measures such a case checks the target; the report prints the
verdicts after the main table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .runner import MIB, Row
from .shapes import LinearShape, LogitsShape, Shape

MB = 10**6
TargetKind = Literal["time", "memory"]
Verdict = Literal["PASS", "MISS", "not measured"]


@dataclass(frozen=True)
class Target:
    """``impl``'s figure on the case must be at most ``bound`` (below it when not ``inclusive``).

    For ``"time"`` the figure is ``impl``'s forward+backward time over the case's reference's
    (torch's), each its best timed sample (see :class:`benchmarks.timing.Timings` for why not the
    median); for ``"memory"`` it is ``impl``'s forward+backward peak in bytes.
    """

    kind: TargetKind
    op: str
    shape: Shape
    dtype: str
    bound: float
    inclusive: bool = True
    impl: str = "crossent"

    def applies_to(self, row: Row) -> bool:
        return (row.op, row.shape, row.dtype) == (self.op, self.shape.label, self.dtype)

    @property
    def label(self) -> str:
        relation = "≤" if self.inclusive else "<"
        if self.kind == "time":
            faster = f" ({1 / self.bound:.0f}x faster)" if self.bound < 1 and (1 / self.bound).is_integer() else ""
            return f"{relation} {self.bound:.2f}x torch{faster}"
        return f"{relation} {self.bound / MB:.0f} MB ({self.bound / MIB:.1f} MiB)"

    def holds(self, figure: float) -> bool:
        return figure <= self.bound if self.inclusive else figure < self.bound


_LLM = LogitsShape(4096, 32768)


def _llm(op: str, dtype: str, speedup: float) -> Target:
    """On the llm logits, crossent's forward+backward at least ``speedup`` times as fast as torch's."""
    return Target("time", op, _LLM, dtype, 1 / speedup)


def _small(rows: int, classes: int, bound: float, *, inclusive: bool = True) -> Target:
    return Target("time", "cross_entropy", LogitsShape(rows, classes), "float32", bound, inclusive)


TARGETS: tuple[Target, ...] = (
    # Small problems: per-call overhead must stay near torch's; from 4096x1000 on, crossent must win.
    _small(3, 3, 1.5),
    _small(128, 10, 1.5),
    _small(1024, 100, 1.2),
    _small(4096, 1000, 1.0, inclusive=False),
    # The native CPU kernels near the memory floor: one read of the logits, one write of the gradient.
    _llm("cross_entropy", "float32", 6),
    _llm("cross_entropy", "bfloat16", 5),
    _llm("log_softmax", "float32", 2),
    _llm("log_softmax", "bfloat16", 2),
    _llm("binary_cross_entropy_with_logits", "float32", 3),
    _llm("kl_div", "float32", 4),
    # The fused loss's memory contract: no (N, V) logits, ever; the gradients alone are 68 MiB.
    Target("memory", "linear_cross_entropy", LinearShape(2048, 512, 32768, 0.1), "float32", 100 * MB),
)


@dataclass(frozen=True)
class Check:
    """A target checked against a run's rows: the figure measured (None if it was not) and the verdict."""

    target: Target
    figure: float | None
    verdict: Verdict
    why: str = ""


def check_targets(rows: Sequence[Row], targets: Sequence[Target] = TARGETS) -> list[Check]:
    """The targets whose case the rows measured (or tried to), in the rows' order, each with its verdict."""
    checks: list[Check] = []
    for target in targets:
        case_rows = [row for row in rows if target.applies_to(row)]
        if not case_rows:
            continue
        checks.append(_check(target, case_rows))
    order = {(row.op, row.shape, row.dtype): index for index, row in reversed(list(enumerate(rows)))}
    return sorted(checks, key=lambda check: order[(check.target.op, check.target.shape.label, check.target.dtype)])


def _check(target: Target, case_rows: list[Row]) -> Check:
    reference = case_rows[0]
    row = next((row for row in case_rows if row.impl == target.impl), None)
    if row is None:
        return Check(target, None, "not measured", f"no {target.impl} row")
    if row.status != "ok":
        return Check(target, None, "not measured", row.status)
    figure: float | None
    if target.kind == "time":
        if reference.full_best_ms is None or row.full_best_ms is None:
            return Check(target, None, "not measured", f"{reference.impl} was not timed: {reference.status}")
        figure = row.full_best_ms / reference.full_best_ms
    else:
        if row.full_peak_mib is None:
            return Check(target, None, "not measured", "peak memory was not measured (--no-memory)")
        figure = row.full_peak_mib * MIB
    return Check(target, figure, "PASS" if target.holds(figure) else "MISS")


def gradient_bytes(shape: Shape, dtype_bytes: int) -> int:
    """Bytes of the gradients of the differentiable inputs: part of every implementation's peak."""
    if isinstance(shape, LinearShape):
        return (shape.tokens + shape.vocab) * shape.hidden * dtype_bytes
    return shape.rows * shape.classes * dtype_bytes
