"""Every function runs under torch.compile(fullgraph=True) with the same values and gradients."""

from __future__ import annotations

import pytest
import torch

import crossent
from tests.helpers import check_against

CASES = {
    "cross_entropy-ignored-smoothing": (
        lambda x, t: crossent.cross_entropy(x, t, label_smoothing=0.1),
        lambda: (torch.randn(6, 5), torch.tensor([0, 1, -100, 3, 4, -100])),
    ),
    "cross_entropy-kdim-weight-none": (
        lambda x, t: crossent.cross_entropy(x, t, torch.arange(1.0, 6.0), reduction="none"),
        lambda: (torch.randn(2, 5, 3), torch.tensor([[0, -100, 4], [1, 2, 3]])),
    ),
    "cross_entropy-probabilities": (
        lambda x, p: crossent.cross_entropy(x, p, label_smoothing=0.2),
        lambda: (torch.randn(4, 5), torch.rand(4, 5)),
    ),
    "nll_loss": (lambda z, t: crossent.nll_loss(z, t), lambda: (torch.randn(4, 5), torch.tensor([0, -100, 2, 3]))),
    "log_softmax": (lambda x: crossent.log_softmax(x, 1), lambda: (torch.randn(4, 5),)),
    "softmax": (lambda x: crossent.softmax(x, 0), lambda: (torch.randn(4, 5),)),
    "binary_cross_entropy": (
        lambda x, y: crossent.binary_cross_entropy(x, y),
        lambda: (torch.rand(4, 5), torch.rand(4, 5)),
    ),
    "binary_cross_entropy_with_logits": (
        lambda x, y: crossent.binary_cross_entropy_with_logits(x, y, pos_weight=torch.full((5,), 2.0)),
        lambda: (torch.randn(4, 5), torch.rand(4, 5)),
    ),
    "kl_div": (
        lambda x, y: crossent.kl_div(x, y, reduction="batchmean"),
        lambda: (torch.randn(4, 5).log_softmax(1), torch.rand(4, 5)),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_fullgraph_compile_matches_eager(case):
    fn, make_inputs = case
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    check_against(compiled, fn, make_inputs(), atol=1e-6, rtol=1e-5)


def test_inductor_compile_of_cross_entropy():
    fn, make_inputs = CASES["cross_entropy-ignored-smoothing"]
    torch._dynamo.reset()
    check_against(torch.compile(fn, fullgraph=True), fn, make_inputs(), atol=1e-6, rtol=1e-5)
