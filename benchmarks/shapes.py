"""Named shape sets: every benchmarked shape lives here, under a name, and nowhere in a script."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class LogitsShape:
    """Logits (or log-probabilities) of shape ``(rows, classes)``: the losses that take logits."""

    rows: int
    classes: int

    @property
    def label(self) -> str:
        return f"{self.rows}x{self.classes}"


@dataclass(frozen=True)
class LinearShape:
    """Hidden states ``(tokens, hidden)`` and a classifier ``(vocab, hidden)``: the fused linear cross-entropy.

    ``ignored_fraction`` of the targets are ``ignore_index``, as padding and prompt tokens are in training.
    """

    tokens: int
    hidden: int
    vocab: int
    ignored_fraction: float

    @property
    def label(self) -> str:
        return f"N={self.tokens} H={self.hidden} V={self.vocab} ignored={self.ignored_fraction:.0%}"


Shape = LogitsShape | LinearShape

SHAPE_SETS: dict[str, tuple[Shape, ...]] = {
    # Many rows, an LLM vocabulary: the headline case of the fast CPU kernels (512 MiB of float32 logits).
    "llm": (LogitsShape(4096, 32768),),
    # A Llama-3 vocabulary: each row is 501 KiB of float32, far larger than the L2 cache.
    "big-vocab": (LogitsShape(1024, 128256),),
    # Many short rows: per-row overhead dominates.
    "many-rows": (LogitsShape(65536, 512),),
    "lce": (LinearShape(2048, 512, 32768, 0.1),),
    "lce-big-vocab": (LinearShape(2048, 512, 128256, 0.1),),
    # Small classification problems, where per-call overhead (argument checks, dispatch, allocation)
    # is most of the time: 3x3 (the size of a worked example), an MNIST-sized head,
    # CIFAR-100, ImageNet. A call takes microseconds to milliseconds, so a timed sample batches many.
    "small": (LogitsShape(3, 3), LogitsShape(128, 10), LogitsShape(1024, 100), LogitsShape(4096, 1000)),
    # Seconds end to end, for tests and CI; odd sizes so that no chunk or vector width divides them.
    "tiny": (LogitsShape(67, 101), LinearShape(53, 24, 211, 0.1)),
}

DEFAULT_SHAPE_SETS: tuple[str, ...] = ("llm", "lce")


def shapes_of(names: Iterable[str]) -> list[Shape]:
    """The shapes of the named sets, in order, each once; ValueError naming an unknown set."""
    shapes: list[Shape] = []
    for name in names:
        if name not in SHAPE_SETS:
            raise ValueError(f"unknown shape set {name!r}; known sets: {', '.join(SHAPE_SETS)}")
        shapes += [shape for shape in SHAPE_SETS[name] if shape not in shapes]
    return shapes


def shape_to_dict(shape: Shape) -> dict[str, object]:
    """A JSON-ready description that :func:`shape_from_dict` turns back into the shape."""
    return {"type": type(shape).__name__, **dataclasses.asdict(shape)}


def shape_from_dict(description: dict[str, object]) -> Shape:
    fields = dict(description)
    shape_type = {"LogitsShape": LogitsShape, "LinearShape": LinearShape}[str(fields.pop("type"))]
    return shape_type(**fields)
