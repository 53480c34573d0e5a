"""DTensor inputs: the loss of a tensor-parallel model runs on the local shards, over the mesh's group.

``crossent.cross_entropy`` hands a ``torch.distributed.tensor.DTensor`` input here, and
``crossent.linear_cross_entropy`` a DTensor classifier or hidden states
(``crossent.functional.dtensor_entry`` checks ``type(x)``, so plain tensors never import this
module). Logits sharded on the class dimension (``Shard(1)``; ``Shard(0)`` for unbatched ``(C,)``),
or a classifier sharded on the vocabulary (``Shard(0)`` of ``(V, H)``), on exactly one mesh
dimension, every other mesh dimension ``Replicate``, become a call of the vocab-parallel loss on the
local shards with the process group of that mesh dimension; a DTensor replicated on every mesh
dimension is computed locally. Every tensor returned is a DTensor replicated on the mesh, and
gradients come back to the DTensor arguments with their own placements, as with
``torch.distributed.tensor.parallel.loss_parallel()``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
from torch.distributed.tensor.placement_types import Placement

__all__ = ["cross_entropy", "linear_cross_entropy"]


@dataclass(frozen=True)
class Layout:
    """Where a loss over DTensors runs: the mesh, and the mesh dimension sharding the classes (None: none does)."""

    mesh: DeviceMesh
    mesh_dim: int | None

    @property
    def replicated(self) -> tuple[Placement, ...]:
        return (Replicate(),) * self.mesh.ndim

    def sharded(self, dim: int) -> tuple[Placement, ...]:
        """``Shard(dim)`` on the class-sharding mesh dimension, ``Replicate`` on the others."""
        return tuple(Shard(dim) if i == self.mesh_dim else Replicate() for i in range(self.mesh.ndim))

    @property
    def group(self) -> dist.ProcessGroup | None:
        return None if self.mesh_dim is None else self.mesh.get_group(self.mesh_dim)


def _describe(placements: Sequence[Placement]) -> str:
    return "(" + ", ".join(repr(p) for p in placements) + ")"


def layout_of(x: DTensor, class_dim: int, caller: str, what: str) -> Layout:
    """The layout of a DTensor that holds the classes along ``class_dim``; ``ValueError`` naming any other placement."""
    placements, mesh = x.placements, x.device_mesh
    sharding = [i for i, p in enumerate(placements) if type(p) is Shard and p.dim == class_dim]
    for i, p in enumerate(placements):
        if i not in sharding and not p.is_replicate():
            raise ValueError(
                f"{caller}: a DTensor {what} must be sharded on its class dimension {class_dim} (Shard({class_dim})) "
                f"or replicated, on every mesh dimension; got placements {_describe(placements)}: {p!r} on mesh "
                f"dimension {i} is not supported"
            )
    if len(sharding) > 1:
        raise ValueError(
            f"{caller}: a DTensor {what} may shard its class dimension {class_dim} on one mesh dimension only; got "
            f"placements {_describe(placements)}, Shard({class_dim}) on mesh dimensions {sharding}"
        )
    if not sharding:
        return Layout(mesh, None)
    mesh_dim = sharding[0]
    # the vocab-parallel loss orders the shards by their rank in the group, DTensor by the mesh coordinate
    if mesh.mesh.numel() > 1 and not bool((mesh.mesh.diff(dim=mesh_dim) > 0).all()):
        raise ValueError(
            f"{caller}: a DTensor {what} sharded over a device mesh whose ranks are not in increasing order along "
            f"mesh dimension {mesh_dim} is not supported (mesh {mesh.mesh.tolist()})"
        )
    return Layout(mesh, mesh_dim)


def _local(
    t: Any, layout: Layout, expected: tuple[Placement, ...], caller: str, what: str, grad_placements: Any = None
) -> Any:
    """The local tensor of a DTensor argument laid out as ``expected``; plain tensors (and None) as they are."""
    if not isinstance(t, DTensor):
        return t
    if t.device_mesh != layout.mesh:
        raise ValueError(f"{caller}: {what} is a DTensor on another device mesh than the loss's ({t.device_mesh})")
    if tuple(t.placements) != expected:
        raise ValueError(
            f"{caller}: a DTensor {what} must have placements {_describe(expected)}, got {_describe(t.placements)}"
        )
    return t.to_local(grad_placements=grad_placements)


def _class_slice(t: Any, layout: Layout, dim: int, caller: str, what: str) -> Any:
    """This rank's classes of a tensor with a class dimension ``dim`` (class weights, probability targets).

    A DTensor replicated on the mesh is cut locally as DTensor cuts ``Shard(dim)`` (its gradient, if any,
    comes back whole); one sharded like the classes gives its local tensor; a plain tensor stays as it is.
    """
    if not isinstance(t, DTensor) or layout.mesh_dim is None:
        return _local(t, layout, layout.replicated, caller, what)
    if tuple(t.placements) == layout.replicated and t.device_mesh == layout.mesh:
        t = t.redistribute(layout.mesh, layout.sharded(dim))
    return _local(t, layout, layout.sharded(dim), caller, what)


def _full_target(t: Any, layout: Layout, dim: int) -> Any:
    """A plain tensor of probabilities holds every class: cut to this rank's (as DTensor would)."""
    if isinstance(t, DTensor) or layout.mesh_dim is None:
        return t
    whole = DTensor.from_local(t, layout.mesh, layout.replicated, run_check=False)
    return whole.redistribute(layout.mesh, layout.sharded(dim)).to_local()


def _replicated(result: Any, layout: Layout) -> Any:
    """The loss (and statistics) as DTensors replicated on the mesh: every rank holds the same values."""

    def wrap(t: torch.Tensor | None) -> DTensor | None:
        return None if t is None else DTensor.from_local(t, layout.mesh, layout.replicated, run_check=False)

    if isinstance(result, torch.Tensor):
        return wrap(result)
    loss, stats = result
    return wrap(loss), type(stats)(*(wrap(s) for s in stats))


def _no_group(process_group: object, caller: str, what: str) -> None:
    if process_group is not None:
        raise ValueError(
            f"{caller}: {what} is a DTensor, whose device mesh gives the process group; pass no process_group"
        )


def cross_entropy(
    loss: Callable[..., Any],
    input: DTensor,
    target: Any,
    weight: Any,
    *args: Any,
    process_group: object,
    normalizer: Any,
    **options: Any,
) -> Any:
    """``loss`` (``crossent.cross_entropy``) of a DTensor ``input``, on the local shards (see the module)."""
    caller = "cross_entropy"
    _no_group(process_group, caller, "input")
    cd = 0 if input.dim() == 1 else 1
    layout = layout_of(input, cd, caller, "input")
    x = input.to_local()
    if isinstance(target, torch.Tensor) and target.shape == input.shape:  # class probabilities, like input
        t = _class_slice(_full_target(target, layout, cd), layout, cd, caller, "target")
    else:
        t = _local(target, layout, layout.replicated, caller, "target (class indices)")
    w = _class_slice(weight, layout, 0, caller, "weight")
    n = _local(normalizer, layout, layout.replicated, caller, "normalizer")
    result = loss(x, t, w, *args, process_group=layout.group, normalizer=n, **options)
    return _replicated(result, layout)


def linear_cross_entropy(
    loss: Callable[..., Any],
    input: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any,
    weight: Any,
    process_group: object,
    normalizer: Any,
    reduce_input_grad: bool,
    **options: Any,
) -> Any:
    """``loss`` (``crossent.linear_cross_entropy``) with a DTensor classifier or hidden states (see the module)."""
    caller = "linear_cross_entropy"
    _no_group(process_group, caller, "linear_weight" if isinstance(linear_weight, DTensor) else "input")
    if isinstance(linear_weight, DTensor):
        layout = layout_of(linear_weight, 0, caller, "linear_weight")
    else:
        layout = Layout(input.device_mesh, None)
        if any(not p.is_replicate() for p in input.placements):
            raise ValueError(
                f"{caller}: a DTensor input (hidden states) must be replicated on every mesh dimension, got "
                f"placements {_describe(input.placements)}"
            )
    w = _local(linear_weight, layout, layout.sharded(0), caller, "linear_weight")
    # each rank's input gradient is its share unless the backward sums it: a DTensor's is then Partial
    shares = layout.mesh_dim is not None and reduce_input_grad is False
    grads = tuple(Partial() if shares and i == layout.mesh_dim else Replicate() for i in range(layout.mesh.ndim))
    h = _local(input, layout, layout.replicated, caller, "input (hidden states)", grad_placements=grads)
    classes_dim = input.dim() - 1  # the logits (*, V) hold the classes last
    logits_shape = (*input.shape[:-1], linear_weight.shape[0])
    if isinstance(target, torch.Tensor) and target.is_floating_point() and tuple(target.shape) == logits_shape:
        t = _class_slice(_full_target(target, layout, classes_dim), layout, classes_dim, caller, "target")
    else:
        t = _local(target, layout, layout.replicated, caller, "target (class indices)")
    b = _class_slice(linear_bias, layout, 0, caller, "linear_bias")
    cw = _class_slice(weight, layout, 0, caller, "weight")
    n = _local(normalizer, layout, layout.replicated, caller, "normalizer")
    result = loss(
        h,
        w,
        t,
        linear_bias=b,
        weight=cw,
        process_group=layout.group,
        normalizer=n,
        reduce_input_grad=reduce_input_grad,
        **options,
    )
    return _replicated(result, layout)
