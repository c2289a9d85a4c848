"""Adam with decoupled weight decay and fairseq's inverse-square-root schedule.

fairseq's ``--optimizer adam`` applies weight decay decoupled from the gradient (AdamW); so does
``torch.optim.AdamW`` used here. The schedule is a pure function of the update count, so it needs no
state in checkpoints beyond ``num_updates``:

    warmup (u < warmup_updates):  lr = warmup_init_lr + (lr - warmup_init_lr) * u / warmup_updates
    after:                        lr = lr * sqrt(warmup_updates / u)

where ``u`` is the 1-based number of the update being made (so the first update already moves the
weights; fairseq runs its first update at ``warmup_init_lr``, usually 0).
"""

from __future__ import annotations

import math

import torch


def build_optimizer(
    params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float
) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=True)


class InverseSqrtSchedule:
    def __init__(self, lr: float, warmup_updates: int, warmup_init_lr: float = -1.0) -> None:
        self.lr, self.warmup = lr, warmup_updates
        if warmup_init_lr < 0:
            warmup_init_lr = 0.0 if warmup_updates > 0 else lr
        self.init = warmup_init_lr

    def __call__(self, num_updates: int) -> float:
        if self.warmup > 0 and num_updates < self.warmup:
            return self.init + (self.lr - self.init) * num_updates / self.warmup
        if self.warmup <= 0:
            return self.lr
        return self.lr * math.sqrt(self.warmup / max(num_updates, 1))

    def apply(self, optimizer: torch.optim.Optimizer, num_updates: int) -> float:
        lr = self(num_updates)
        for g in optimizer.param_groups:
            g["lr"] = lr
        return lr
