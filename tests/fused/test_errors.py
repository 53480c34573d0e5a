"""Bad arguments raise what torch 2.13's F.linear_cross_entropy raises: same class, same message."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as TF

from crossent.fused import linear_cross_entropy

h = torch.randn(4, 3)
w = torch.randn(5, 3)
y = torch.tensor([0, 1, 2, -100])

CASES = {
    "integer input": ((h.long(), w.long(), y), {}),
    "input/weight dtypes": ((h, w.double(), y), {}),
    "bias dtype": ((h, w, y), {"linear_bias": torch.zeros(5, dtype=torch.float64)}),
    "input dtype with bias": ((h.double(), w, y), {"linear_bias": torch.zeros(5)}),
    "half input": ((h.half(), w, y), {}),
    "1-d weight": ((h, w[0], y), {}),
    "in_features": ((h, w[:, :2], y), {}),
    "bias shape": ((h, w, y), {"linear_bias": torch.zeros(4)}),
    "K-dim unbatched": ((h[0], w.reshape(5, 1, 3), y[0]), {}),
    "probabilities with ignore_index": ((h, w, torch.rand(4, 5)), {"ignore_index": -100}),
    "integer probabilities": ((h, w, torch.ones(4, 5, dtype=torch.long)), {}),
    "target out of bounds": ((h, w, torch.tensor([0, 1, 2, 7])), {}),
    "batch mismatch": ((h, w, y[:3]), {}),
    "int32 target": ((h, w, y.int()), {}),
    "2-d target": ((h, w, y.reshape(2, 2)), {}),
    "reduction": ((h, w, y), {"reduction": "batchmean"}),
    "label_smoothing > 1": ((h, w, y), {"label_smoothing": 1.5}),
    "class weight shape": ((h, w, y), {"weight": torch.ones(4)}),
    "class weight dtype": ((h, w, y), {"weight": torch.ones(5, dtype=torch.float64)}),
    "class weight requires grad": ((h, w, y), {"weight": torch.ones(5, requires_grad=True)}),
    "ignore_index type": ((h, w, y), {"ignore_index": "x"}),
    "probabilities class weight shape": ((h, w, torch.rand(4, 5)), {"weight": torch.ones(3)}),
    "unbatched smoothing with 1-d target": ((h[0], w, y[:1]), {"label_smoothing": 0.1}),
}


def _raised(fn, *args, **kwargs) -> BaseException:
    with pytest.raises(Exception) as info:
        fn(*args, **kwargs)
    return info.value


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_same_error_as_torch(case):
    args, kwargs = CASES[case]
    expected = _raised(TF.linear_cross_entropy, *args, **kwargs)
    actual = _raised(linear_cross_entropy, *args, **kwargs)
    assert type(actual) is type(expected)
    assert str(actual) == str(expected)


def test_not_a_tensor():
    with pytest.raises(TypeError, match=r"argument 'target' \(position 3\) must be Tensor, not list"):
        linear_cross_entropy(h, w, [0, 1, 2, 3])
    with pytest.raises(TypeError, match="argument 'linear_bias' must be Tensor, not int"):
        linear_cross_entropy(h, w, y, linear_bias=3)


def test_leading_dims_extension():
    """Inputs of more than 2 dims (crossent's extension) need targets of the leading shape."""
    with pytest.raises(ValueError, match=re.escape("Expected target of shape (2, 2) (class indices) or (2, 2, 5)")):
        linear_cross_entropy(h.reshape(2, 2, 3), w, y)
    with pytest.raises(RuntimeError, match=re.escape("requires input of shape (N, 3)")):
        linear_cross_entropy(h.reshape(2, 2, 3), w.reshape(5, 1, 3), y.reshape(2, 2, 1))
    with pytest.raises(RuntimeError, match="expected input with dimensionality 1 or more, got 0"):
        linear_cross_entropy(torch.tensor(1.0), w, y)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "chunk_size must be a positive int, got 0"),
        ({"workspace_bytes": -1}, "workspace_bytes must be a positive int, got -1"),
        ({"chunk_size": 4, "workspace_bytes": 1024}, "pass chunk_size or workspace_bytes, not both"),
        ({"impl": "cuda"}, "impl must be one of"),
    ],
)
def test_extra_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        linear_cross_entropy(h, w, y, **kwargs)
