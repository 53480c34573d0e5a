"""torch.func transforms and forward-mode AD get one clear error that names the transform."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.autograd.forward_ad as forward_ad

import crossent

x = torch.randn(4, 5)
y = torch.tensor([0, 1, 2, 3])
W = torch.randn(3, 5)
OPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "cross_entropy": lambda z: crossent.cross_entropy(z, y),
    "nll_loss": lambda z: crossent.nll_loss(z, y),
    "log_softmax": lambda z: crossent.log_softmax(z, 1).sum(),
    "softmax": lambda z: crossent.softmax(z, 1).sum(),
    "binary_cross_entropy": lambda z: crossent.binary_cross_entropy(z.sigmoid(), torch.full_like(z, 0.5)),
    "binary_cross_entropy_with_logits": lambda z: crossent.binary_cross_entropy_with_logits(z, torch.full_like(z, 0.5)),
    "kl_div": lambda z: crossent.kl_div(z, torch.full_like(z, 0.2), reduction="batchmean"),
    "linear_cross_entropy": lambda z: crossent.linear_cross_entropy(z, W, y % 3),
}


def _forward_ad(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> Any:
    with forward_ad.dual_level():
        return fn(forward_ad.make_dual(z, torch.randn_like(z)))


TRANSFORMS: dict[str, tuple[str, Callable[[Callable[..., Any], torch.Tensor], Any]]] = {
    "vmap": ("torch.func.vmap", lambda fn, z: torch.vmap(fn)(z.expand(2, *z.shape))),
    "grad": ("torch.func.grad", lambda fn, z: torch.func.grad(fn)(z)),
    "jacrev": ("jacrev", lambda fn, z: torch.func.jacrev(fn)(z)),
    "vjp": ("vjp", lambda fn, z: torch.func.vjp(fn, z)),
    "jvp": ("torch.func.jvp", lambda fn, z: torch.func.jvp(fn, (z,), (z,))),
    "jacfwd": ("jacfwd", lambda fn, z: torch.func.jacfwd(fn)(z)),
    "forward-mode AD": ("forward-mode AD", _forward_ad),
}


@pytest.mark.parametrize("transform", TRANSFORMS.values(), ids=TRANSFORMS.keys())
@pytest.mark.parametrize("op", OPS, ids=OPS.keys())
def test_transform_is_refused_with_a_message_naming_it(op, transform):
    named, run = transform
    with pytest.raises(RuntimeError, match=rf"crossent\.{op} does not support .*{named}") as info:
        run(OPS[op], x.clone())
    assert "data-dependent" not in str(info.value)


def test_plain_autograd_is_untouched():
    z = x.clone().requires_grad_()
    crossent.cross_entropy(z, y).backward()
    assert z.grad is not None
