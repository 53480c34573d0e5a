"""kl_div with operands of different ranks: torch's divisor for 'batchmean' and its 0-d promotion rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

import crossent
from tests.helpers import check_against

F32, F64 = torch.float32, torch.float64
SHAPES = {
    "0-d input, (3, 5) target": ((), (3, 5)),
    "(3, 5) input, 0-d target": ((3, 5), ()),
    "(5,) input, (3, 5) target": ((5,), (3, 5)),
    "(3, 1) input, (3, 5) target": ((3, 1), (3, 5)),
    "0-d input, 0-d target": ((), ()),
}
DTYPES = {
    "float64": (F64, F64),
    "float64 input, float32 target": (F64, F32),
    "float32 input, float64 target": (F32, F64),
}


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
@pytest.mark.parametrize("dtypes", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("shapes", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss")
def test_operands_of_different_ranks_match_torch(shapes, dtypes, reduction, log_target):
    x = torch.randn(shapes[0], dtype=dtypes[0])
    t = torch.rand(shapes[1], dtype=dtypes[1])
    low_precision = F32 in dtypes
    check_against(
        crossent.kl_div,
        TF.kl_div,
        (x, t),
        {"reduction": reduction, "log_target": log_target},
        grad_args=(0, 1),
        atol=1e-6 if low_precision else 1e-12,
        rtol=1e-5 if low_precision else 1e-10,
    )


def test_batchmean_of_a_0d_input_is_the_sum():
    x, t = torch.tensor(0.3, dtype=F64), torch.rand(3, 5, dtype=F64)
    torch.testing.assert_close(crossent.kl_div(x, t, reduction="batchmean"), TF.kl_div(x, t, reduction="batchmean"))
    torch.testing.assert_close(crossent.kl_div(x, t, reduction="batchmean"), crossent.kl_div(x, t, reduction="sum"))
