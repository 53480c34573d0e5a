"""DTensor inputs on a device mesh of one rank, in the test process itself: the shard is the whole
vocabulary, so the losses must equal torch exactly (float64 gradcheck runs cheaply here; the sharded
cases run on spawned ranks in ``test_dtensor``). Also: plain tensors never load the DTensor entry,
and an ``nn.Parameter`` classifier still compiles with ``fullgraph=True``."""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard

import crossent
from tests.helpers import check_against

pytestmark = pytest.mark.distributed


@pytest.fixture(scope="module")
def mesh() -> Iterator[DeviceMesh]:
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, wait_for_workers=False)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def on_mesh(x: torch.Tensor, mesh: DeviceMesh, placement: Shard | Replicate) -> DTensor:
    """``x`` as this rank's shard (here: all of it), differentiably."""
    return DTensor.from_local(x, mesh, [placement], run_check=False)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("probability", [False, True])
@pytest.mark.parametrize("placement", [Shard(1), Replicate()], ids=["sharded", "replicated"])
def test_cross_entropy_equals_torch(
    mesh: DeviceMesh, reduction: str, probability: bool, placement: Shard | Replicate
) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 5, 3, dtype=torch.float64, generator=g)
    w = torch.rand(5, dtype=torch.float64, generator=g) + 0.5
    t = torch.rand(4, 5, 3, dtype=torch.float64, generator=g) if probability else torch.tensor([[0, 4, -100]] * 4)
    kwargs = {"reduction": reduction, "label_smoothing": 0.2}

    def ours(x: torch.Tensor) -> torch.Tensor:
        loss = crossent.cross_entropy(on_mesh(x, mesh, placement), t, w, **kwargs)  # type: ignore[arg-type]
        assert isinstance(loss, DTensor) and loss.placements == (Replicate(),)
        return loss.to_local()

    check_against(ours, lambda x: F.cross_entropy(x, t, w, **kwargs), [x])  # type: ignore[arg-type]
    assert torch.autograd.gradcheck(ours, (x.clone().requires_grad_(),))


def test_linear_cross_entropy_equals_torch(mesh: DeviceMesh) -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 4, dtype=torch.float64, generator=g)
    classifier = torch.randn(5, 4, dtype=torch.float64, generator=g)
    y = torch.tensor([0, 4, -100, 2, 2, 1])

    def ours(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        loss = crossent.linear_cross_entropy(on_mesh(h, mesh, Replicate()), on_mesh(w, mesh, Shard(0)), y, z_loss=0.1)
        return loss.to_local()

    def oracle(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(h @ w.T, y) + 0.1 * torch.logsumexp(h @ w.T, 1)[y != -100].square().mean()

    check_against(ours, oracle, [h, classifier], grad_args=(0, 1))


def test_plain_tensors_never_load_the_dtensor_entry() -> None:
    code = (
        "import sys, torch, crossent\n"
        "x, y = torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 3])\n"
        "crossent.cross_entropy(x, y).backward()\n"
        "crossent.linear_cross_entropy(torch.randn(3, 2), torch.nn.Parameter(torch.randn(4, 2)), y).backward()\n"
        "assert 'crossent.distributed.dtensor' not in sys.modules, 'loaded'\n"
    )
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(src)})
    assert done.returncode == 0, done.stderr


def test_parameter_classifier_compiles_fullgraph() -> None:
    head = torch.nn.Linear(3, 5, bias=False)
    y = torch.tensor([0, 4, -100, 2])

    def step(h: torch.Tensor) -> torch.Tensor:
        return crossent.linear_cross_entropy(h, head.weight, y)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    check_against(compiled, step, [torch.randn(4, 3)], atol=1e-6, rtol=1e-5)
