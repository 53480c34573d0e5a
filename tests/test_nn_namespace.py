"""``crossent.nn`` lists its loss modules and nothing else, so ``import crossent.nn as nn`` is unsurprising."""

from __future__ import annotations

import torch

import crossent.nn


def test_dir_holds_only_the_losses() -> None:
    public = {name for name in dir(crossent.nn) if not name.startswith("_")}
    assert public == set(crossent.nn.__all__)
    for stray in ("F", "torch", "Tensor", "annotations", "focal_loss"):
        assert stray not in public


def test_every_listed_name_is_a_loss_module() -> None:
    for name in crossent.nn.__all__:
        assert issubclass(getattr(crossent.nn, name), torch.nn.Module), name
