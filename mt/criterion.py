"""Label-smoothed cross entropy plus weighted auxiliary losses (MoE balance losses and the like).

The smoothed loss follows PyTorch's / Szegedy et al.'s definition: ``(1 - eps) * nll + eps * mean_v(-log p_v)``
(fairseq spreads eps over V-1 classes instead of V; the difference is O(eps/V)). Sums, not means, come
back: the loop divides by the number of target tokens of the whole update (all micro-batches, all
ranks), as fairseq does, so gradient accumulation and data parallelism give the same update as one big
batch.

Aux losses arrive in ``ForwardContext.aux_losses`` (name -> scalar, already averaged over tokens by the
module that made it). Each is multiplied by ``aux_loss_weights.get(name, 1.0)``; the module that adds a
new aux loss registers its default weight (e.g. ``--moe-gate-loss-wt``) in that dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class CriterionOutput:
    loss: torch.Tensor  # summed label-smoothed loss over target tokens (nats)
    nll_loss: torch.Tensor  # summed nll (nats), detached
    ntokens: int
    aux: dict[str, torch.Tensor] = field(default_factory=dict)  # unweighted aux values, detached
    aux_total: torch.Tensor | float = 0.0  # sum of weighted aux losses (with graph)


class LabelSmoothedCrossEntropy:
    def __init__(self, label_smoothing: float = 0.1, aux_loss_weights: dict[str, float] | None = None) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label smoothing must be in [0, 1), got {label_smoothing}")
        self.eps = label_smoothing
        self.aux_loss_weights = dict(aux_loss_weights or {})

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, aux_losses: dict[str, torch.Tensor] | None = None) -> CriterionOutput:
        """``logits`` (N, V) at the N non-padding target positions, ``target`` (N,)."""
        lprobs = F.log_softmax(logits.float(), dim=-1)
        nll = -lprobs.gather(1, target[:, None]).squeeze(1)
        loss = nll.sum()
        if self.eps > 0:
            smooth = -lprobs.mean(dim=-1)
            loss = (1.0 - self.eps) * loss + self.eps * smooth.sum()
        aux, aux_total = {}, 0.0
        for name, value in (aux_losses or {}).items():
            aux[name] = value.detach().float()
            aux_total = aux_total + self.aux_loss_weights.get(name, 1.0) * value.float()
        return CriterionOutput(loss, nll.sum().detach(), int(target.numel()), aux, aux_total)
