"""mt-train's side of sparse MoE and adapters: expert parallelism, expert gradients, freezing.

Layout under ``torchrun`` with W ranks and E experts per MoE layer (fairseq / DeepSpeed's): each rank keeps
E/W experts of every MoE layer (``setup``), everything else is replicated. DDP all-reduces the replicated
parameters only: expert parameters (``param.expert = True``) are registered as ignored, because each
rank owns different experts and their gradients already hold the contributions of every rank's tokens
(the ``all_to_all`` backward brings them home).

Gradient scale. The loop scales each rank's loss by W / (target tokens of the update) so that DDP's
averaging yields the single-process gradient. Expert gradients skip that averaging, so ``finish_grads``
divides them by W (fairseq's ``--moe-normalize-expert-grad world_size``): W ranks then make exactly the
update one process makes on the same batch. Experts that got no token this update get a zero gradient
(not None), so Adam treats them the same whatever the world size.

Transport: ``torch.distributed.all_to_all_single`` with uneven splits, on a process group of its own
(nccl on GPUs; gloo on CPU, which supports uneven all-to-all, bf16 included, in torch 2.13: checked).

Gradient norm. Replicated gradients are equal on every rank, expert gradients differ: the global norm is
``sqrt(|shared|^2 + sum over ranks |experts_r|^2)`` (one all-reduce), so every rank clips by the same
factor and skips the same non-finite updates.

Not the one-process update everywhere: gradient scale, balance loss, CMR budget loss and norm are exact,
but each rank applies expert capacity to its own shard of the batch (an overflow drops different
assignments than one process would), draws its own routing noise and masks (``sampling`` / ``random``
second experts, EOM / FOM, CMR gate dropout), and averages the z-loss over its own rows. The W-rank run
equals the one-process run only with no assignment over capacity, ``--moe-second-expert-policy all``,
no masking or dropout, and a zero z-loss weight (tests/test_train_moe_loop.py checks exactly that case);
the list with the reasons is in ``mt.models.moe`` ("Where W ranks do not compute exactly ...").
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mt.common.distributed import DistInfo
from mt.common.errors import UserError
from mt.models.adapters import is_adapter_param
from mt.models.moe import expert_parallel_, moe_layers, num_moe_layers  # noqa: F401 (re-exported)


def is_expert(p: torch.Tensor) -> bool:
    return bool(getattr(p, "expert", False))


def setup(model: nn.Module, di: DistInfo) -> Any:
    """Shard the experts over the ranks (collective: creates the all-to-all group); returns the group."""
    if not di.distributed or not moe_layers(model):
        return None
    E = moe_layers(model)[0].num_experts
    if E % di.world_size:
        raise UserError(
            f"--moe-expert-count {E} is not divisible by the world size {di.world_size}: with expert parallelism "
            f"each rank holds E/W experts; use a multiple of {di.world_size} experts or another --nproc_per_node"
        )
    group = dist.new_group(list(range(di.world_size)))
    expert_parallel_(model, di.rank, di.world_size, group)
    return group


def ddp_ignore_experts(model: nn.Module) -> list[str]:
    """Tell DDP (before wrapping) not to broadcast or all-reduce expert parameters."""
    from torch.nn.parallel import DistributedDataParallel

    names = [n for n, p in model.named_parameters() if is_expert(p)]
    if names:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    return names


def finish_grads(model: nn.Module, world: int) -> None:
    """Expert gradients: zeros where None, divided by the world size (see the module docstring)."""
    for p in model.parameters():
        if is_expert(p) and p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            elif world > 1:
                p.grad.div_(world)


def clip_grad_norm_(model: nn.Module, max_norm: float, group: Any = None) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over all parameters, with the expert part summed over ranks."""
    params = [p for p in model.parameters() if p.grad is not None]
    if group is None:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    shared = [p.grad for p in params if not is_expert(p)]
    experts = [p.grad for p in params if is_expert(p)]
    zero = torch.zeros((), device=params[0].grad.device) if params else torch.zeros(())
    sq_shared = torch.nn.utils.get_total_norm(shared).float() ** 2 if shared else zero
    sq_experts = torch.nn.utils.get_total_norm(experts).float() ** 2 if experts else zero.clone()
    dist.all_reduce(sq_experts, group=group)
    total = (sq_shared + sq_experts).sqrt()
    if math.isfinite(float(total)) and params:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def checkpoint_meta(model: nn.Module, optimizer: torch.optim.Optimizer, world: int) -> dict[str, Any] | None:
    """What ``mt.formats.checkpoint`` needs to split experts into per-rank shards and re-shard them on load."""
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [n for n, p in model.named_parameters() if is_expert(p)]
    if not keys:
        return None
    flat = [p for g in optimizer.param_groups for p in g["params"]]
    ids = [i for i, p in enumerate(flat) if is_expert(p) and id(p) in names]
    return {"shards": world, "expert_keys": keys, "expert_param_ids": ids}


def freeze_base(model: nn.Module) -> tuple[int, int]:
    """``--freeze-base``: only adapters (and the hyper-network) train. Returns (trainable, frozen) counts."""
    trainable = frozen = 0
    for name, p in model.named_parameters():
        keep = is_adapter_param(name)
        p.requires_grad_(keep)
        if keep:
            trainable += p.numel()
        else:
            frozen += p.numel()
    if trainable == 0:
        raise UserError("--freeze-base needs --lang-adapters or --hyper-adapters: otherwise nothing would train")
    return trainable, frozen
