"""torch.compile(fullgraph=True) keeps the native kernels in its graph as torch.ops.crossent custom ops,
with the values and gradients of eager mode."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import crossent
from tests.helpers import check_against
from tests.native.native_env import needs_native

pytestmark = needs_native

CASES = {
    "cross_entropy-indices": (
        lambda x, t: crossent.cross_entropy(x, t, label_smoothing=0.1),
        lambda: (torch.randn(6, 5), torch.tensor([0, 1, -100, 3, 4, -100])),
    ),
    "cross_entropy-indices-none": (
        lambda x, t: crossent.cross_entropy(x, t, torch.arange(1.0, 6.0), reduction="none"),
        lambda: (torch.randn(6, 5), torch.tensor([0, 1, -100, 3, 4, 2])),
    ),
    "cross_entropy-probabilities": (
        lambda x, p: crossent.cross_entropy(x, p, label_smoothing=0.2),
        lambda: (torch.randn(4, 5), torch.rand(4, 5)),
    ),
    "log_softmax": (lambda x: crossent.log_softmax(x, -1), lambda: (torch.randn(4, 5),)),
    "softmax": (lambda x: crossent.softmax(x, 1), lambda: (torch.randn(4, 5, 1),)),
    "binary_cross_entropy_with_logits": (
        lambda x, y: crossent.binary_cross_entropy_with_logits(x, y, pos_weight=torch.full((5,), 2.0)),
        lambda: (torch.randn(4, 5), torch.rand(4, 5)),
    ),
    "kl_div": (
        lambda x, y: crossent.kl_div(x, y, reduction="batchmean"),
        lambda: (torch.randn(4, 5).log_softmax(1), torch.rand(4, 5)),
    ),
}


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _crossent_ops(gm: torch.fx.GraphModule) -> set[str]:
    """The torch.ops.crossent operators called anywhere in ``gm``, its subgraphs included (the forward
    and backward of an autograd Function are subgraphs of autograd_function_apply)."""
    found = set()
    for module in gm.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                if node.op == "call_function" and getattr(node.target, "namespace", None) == "crossent":
                    found.add(str(node.target))
    return found


@pytest.mark.parametrize("name", CASES)
def test_fullgraph_keeps_the_native_kernels(name):
    fn, make_inputs = CASES[name]
    graphs: list[torch.fx.GraphModule] = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(fn, fullgraph=True, backend=record)
    check_against(compiled, fn, make_inputs(), atol=1e-6, rtol=1e-5)
    assert len(graphs) == 1
    ops = _crossent_ops(graphs[0])
    kernel = "elementwise_loss" if name.startswith(("binary", "kl")) else name.split("-")[0]
    kernel = {"cross_entropy": "cross_entropy_rows", "log_softmax": "softmax_rows", "softmax": "softmax_rows"}.get(
        kernel, kernel
    )
    assert f"crossent.{kernel}.default" in ops, ops


@pytest.mark.parametrize("name", CASES)
def test_aot_eager_forward_and_backward_match_eager(name):
    fn, make_inputs = CASES[name]
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    check_against(compiled, fn, make_inputs(), atol=1e-6, rtol=1e-5)
    check_against(compiled, fn, make_inputs(), atol=1e-6, rtol=1e-5)  # the cached graph


def test_aot_graphs_hold_the_backward_kernels():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs: dict[str, list[torch.fx.GraphModule]] = {"forward": [], "backward": []}

    def keep(kind):
        def compiler(gm, example_inputs):
            graphs[kind].append(gm)
            return make_boxed_func(gm.forward)

        return compiler

    backend = aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward"))
    fn = lambda x: crossent.log_softmax(x, -1)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    check_against(compiled, fn, (torch.randn(6, 7),), atol=1e-6, rtol=1e-5)
    assert "crossent.softmax_rows.default" in _crossent_ops(graphs["forward"][0])
    assert "crossent.softmax_rows_backward.default" in _crossent_ops(graphs["backward"][0])


def test_fullgraph_compile_as_the_first_call_of_a_process():
    code = (
        "import torch, crossent\n"
        "fn = torch.compile(lambda x, t: crossent.cross_entropy(x, t), fullgraph=True, backend='aot_eager')\n"
        "x = torch.randn(4, 5, requires_grad=True)\n"
        "fn(x, torch.tensor([0, 1, 2, 3])).backward()\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
