"""Process-group set-up and FSDP2 sharding for the training entry point.

One code path for every scale: torchrun's environment variables (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) select N processes on one node or N nodes; without them the same code runs
as a one-process group built on an in-memory store (no port, no network). gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.distributed.utils import _apply_to_tensors


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str
    initialized_here: bool  # True when this context created the process group (so it must destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` -> this process's GPU when CUDA is available, else the CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda", local_rank)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r} (auto | cpu | cuda)")


def init(device: str = "auto", timeout_s: float = 1800.0) -> DistContext:
    """Join (or create) the default process group; reuse it if the caller already made one."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = choose_device(device, local_rank)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    created = False
    if not dist.is_initialized():
        timeout = timedelta(seconds=timeout_s)
        if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
            # torchrun (or Slurm exporting the same variables): env:// rendezvous.
            kwargs = {"device_id": dev} if dev.type == "cuda" else {}
            dist.init_process_group(backend, timeout=timeout, **kwargs)
        else:
            # A plain `python -m gazevlm.train`: a group of one over an in-memory store.
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout)
        created = True
    return DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        device=dev,
        backend=dist.get_backend(),
        initialized_here=created,
    )


def shutdown(ctx: DistContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free right now (for tests that build their own rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def all_reduce(values: torch.Tensor, ctx: DistContext, op: str = "sum") -> torch.Tensor:
    """All-reduce a small float64 tensor of statistics (on the process group's device)."""
    t = values.detach().to(ctx.device, torch.float64).clone()
    if ctx.world_size > 1:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return t.cpu()


def all_true(flag: bool, ctx: DistContext) -> bool:
    return bool(all_reduce(torch.tensor([float(flag)]), ctx, "min")[0] > 0.5)


def any_true(flag: bool, ctx: DistContext) -> bool:
    return bool(all_reduce(torch.tensor([float(flag)]), ctx, "max")[0] > 0.5)


def gather_objects(obj: object, ctx: DistContext) -> list:
    """Every rank's `obj`, in rank order (used for per-rank RNG states; pickled in memory only)."""
    if ctx.world_size == 1:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def shard_model(
    model: nn.Module, ctx: DistContext, ignored: Iterable[nn.Module] = (), units: Iterable[nn.Module] | None = None
) -> nn.Module:
    """FSDP2 over all ranks: each unit is sharded on its own, children before parents; then the root
    takes the rest. `units` default: the model's own `fsdp_units()` if it has one, else every element
    of every nn.ModuleList that implements forward (the repeated blocks).

    `ignored` modules (the frozen vision tower) stay whole on every rank: they get no gradient to
    synchronise, and keeping them whole lets `encode_vision` run outside the root's forward (the
    vision-feature cache) without an all-gather.
    """
    ignored = list(ignored)
    ignored_ids = {id(sub) for mod in ignored for sub in mod.modules()}
    ignored_params = {p for mod in ignored for p in mod.parameters()}
    if units is None and hasattr(model, "fsdp_units"):
        units = model.fsdp_units()
    if units is None:
        units = [
            c
            for m in model.modules()
            if isinstance(m, nn.ModuleList)
            for c in m.children()
            if not isinstance(c, (nn.ModuleList, nn.ModuleDict))
        ]
    units = [u for u in units if id(u) not in ignored_ids]
    unit_ids = {id(u) for u in units} | {id(a) for a in _aliases(model, units, ignored_ids)}
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    seen: set[int] = set()

    def visit(module: nn.Module) -> None:
        # Post-order over the de-duplicated tree, so a block reachable from two containers (OpenFlamingo's
        # cross-attention layers sit in two ModuleLists) is sharded once, before any parent.
        if id(module) in seen or id(module) in ignored_ids:
            return
        seen.add(id(module))
        for child in module.children():
            visit(child)
        if id(module) in unit_ids and not isinstance(module, FSDPModule) and any(True for _ in module.parameters()):
            _return_no_views(module)
            fully_shard(module, mesh=mesh)

    for child in model.children():
        visit(child)
    _return_no_views(model)
    fully_shard(model, mesh=mesh, ignored_params=ignored_params or None)
    return model


def _non_view(output):
    """`output` with every grad-requiring view replaced by a copy (see _return_no_views)."""
    if not torch.is_grad_enabled():
        return output
    return _apply_to_tensors(lambda t: t.clone() if t.requires_grad and t._base is not None else t, output)


def _return_no_views(module: nn.Module) -> None:
    """Make a unit about to be sharded return no view tensors.

    FSDP2 hooks its pre-backward all-gather onto the unit's output tensors. When an output is a view
    (OPT's decoder layer ends in `.view(shape)`, and the Flamingo layer, the gaze block and the model
    pass such tensors on), an in-place op on it downstream would rebase its autograd node, drop the
    hook and skip the all-gather, silently. No code on our path does that today (the 2-rank vs 1-rank
    gradient test is exact), but nothing would say so if one did: returning a copy removes the hazard
    and FSDP's warning. The hook runs before FSDP's post-forward hook (prepend), so FSDP sees the copy;
    it costs one activation copy per unit, in training only."""
    module.register_forward_hook(lambda mod, args, output: _non_view(output), prepend=True)


def _aliases(model: nn.Module, units: list[nn.Module], ignored_ids: set[int]) -> list[nn.Module]:
    """Modules inside a unit that are also reachable from the root by a path around it.

    OpenFlamingo keeps its decoder and cross-attention layers both inside each FlamingoLayer and in
    two ModuleLists of their own (old_decoder_blocks, gated_cross_attn_layers). The root would then
    claim parameters that the unit has already sharded; making each alias a unit of its own (sharded
    before its parent) gives every parameter exactly one owner.
    """
    unit_ids = {id(u) for u in units}
    inner = {id(d) for u in units for d in u.modules() if d is not u}
    found: list[nn.Module] = []
    seen: set[int] = set()
    stack = [model]
    while stack:
        for child in stack.pop().children():
            if id(child) in seen or id(child) in unit_ids or id(child) in ignored_ids:
                continue
            seen.add(id(child))
            if id(child) in inner:
                found.append(child)
            else:
                stack.append(child)
    return found


@torch.no_grad()
def load_full_state_dict(model: nn.Module, full: dict[str, torch.Tensor], ctx: DistContext) -> None:
    """Copy a full (unsharded) state dict, present on rank 0 only, into a sharded model.

    Written out because torch's set_model_state_dict leaves aliased names (OpenFlamingo registers
    each decoder layer under two paths) as plain tensors and then fails to copy them into DTensors.
    Each tensor is loaded once under its first name; aliases share its storage. The caller checks
    keys and shapes strictly beforehand (gazevlm.checkpoint.check_compatible).
    """
    persistent = set(model.state_dict().keys())
    entries = [*model.named_parameters(), *((n, b) for n, b in model.named_buffers() if n in persistent)]
    for name, target in entries:
        if isinstance(target, DTensor):
            source = full[name].to(target.dtype) if ctx.is_main else torch.empty(target.shape, dtype=target.dtype)
            shard = distribute_tensor(
                source.to(target.device_mesh.device_type), target.device_mesh, target.placements, src_data_rank=0
            )
            target.to_local().copy_(shard.to_local())
        else:
            source = full[name].to(target.device, target.dtype) if ctx.is_main else torch.empty_like(target)
            if ctx.world_size > 1:
                dist.broadcast(source, src=0)
            target.copy_(source)
