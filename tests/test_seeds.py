"""The worked examples of the source tutorials (shared/seeds), computed by hand there."""

from __future__ import annotations

import math

import torch

import crossent


def test_seed_003_x_input_with_targets_1_2_0_gives_2_3185():
    # seed 003_097d806fe62eab93: nn.CrossEntropyLoss on its printed 3x3 x_input
    x_input = torch.tensor([[2.8883, 0.1760, 1.0774], [1.1216, -0.0562, 0.0660], [-1.3939, -0.0967, 0.5853]])
    loss = crossent.nn.CrossEntropyLoss()(x_input, torch.tensor([1, 2, 0]))
    assert round(loss.item(), 4) == 2.3185


def test_seed_000_per_sample_sum_and_mean():
    # seed 000_3d6547d3ed74d863: inputs [[1,2],[1,3],[1,3]], targets [0,1,1]
    x = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]])
    t = torch.tensor([0, 1, 1])
    by_hand = [
        -math.log(math.exp(1) / (math.exp(1) + math.exp(2))),
        -math.log(math.exp(3) / (math.exp(1) + math.exp(3))),
        -math.log(math.exp(3) / (math.exp(1) + math.exp(3))),
    ]
    per_sample = crossent.nn.CrossEntropyLoss(reduction="none")(x, t)
    torch.testing.assert_close(per_sample, torch.tensor(by_hand))
    assert math.isclose(crossent.nn.CrossEntropyLoss(reduction="sum")(x, t).item(), sum(by_hand), rel_tol=1e-6)
    assert math.isclose(crossent.nn.CrossEntropyLoss()(x, t).item(), sum(by_hand) / 3, rel_tol=1e-6)


def test_seed_000_weighted_mean_divides_by_the_sum_of_target_weights():
    # the seed's weighted example: weight = [1, 2]; mean = sum(w_y * loss) / sum(w_y) = (1*l0 + 2*l1 + 2*l2) / 5
    x = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, 3.0]])
    t = torch.tensor([0, 1, 1])
    w = torch.tensor([1.0, 2.0])
    per_sample = crossent.cross_entropy(x, t, reduction="none")
    expected = (per_sample[0] + 2 * per_sample[1] + 2 * per_sample[2]) / 5
    torch.testing.assert_close(crossent.nn.CrossEntropyLoss(weight=w)(x, t), expected)
