"""Training-stability monitor: Adam statistics per parameter group, loss-spike detection, rollback.

Molybog et al. 2023 ("A theory on Adam instability in large-scale machine learning", arXiv 2304.09871):
loss spikes come from layers whose gradients become tiny against Adam's epsilon and correlated in time,
so that the normalised update r = m̂ / (sqrt(v̂) + eps) piles up near ±1 (a sign-like, bimodal update) and
stops following the gradient. What ``mt-train`` logs for each parameter group (embeddings, each layer's
attention / cross-attention / FFN / experts / gate / adapter, the final norms), on the update of every
``--log-interval``-th step, in the ``stability`` field of the ``train`` record of train_log.jsonl:

    grad_rms       sqrt(mean g²) of the gradient Adam used (after clipping)
    v_below_eps    share of coordinates with sqrt(v̂) < eps (the second moment under epsilon's scale)
    update_rms     RMS of r: the update's size relative to the learning rate (weight decay left out)
    bimodality     Sarle's coefficient (skew² + 1) / kurtosis of r: 1/3 Gaussian, 5/9 uniform, 1 for ±1
    cos            cosine between r (the descent step) and the gradient: 1 = plain gradient descent

Cheaply: each group is summarised on a fixed random sample of at most ``max_samples`` coordinates
(spread over its tensors by size, drawn once from a seeded generator that is not the training RNG), read
from the gradients and Adam's state right after ``optimizer.step()``; ``monitor_ms`` in the record is what
it cost. ``bench/stability_overhead.py`` measures it against the step time.

Spikes. Every update's loss is compared with the median of the last ``WINDOW`` non-spike losses: a
spike is loss > median + Z * spread (Z = ``--spike-threshold``, spread = 1.4826 x the median absolute
deviation, at least 1% of the median; after ``MIN_HISTORY`` updates), or a non-finite loss. Every spiking
update is logged (``spike`` record); a fairseq-style ``WARNING:`` line is printed when the loss starts
spiking and every 50 updates while it keeps spiking. With ``--spike-rollback K
--spike-skip M`` (PaLM's recovery, Chowdhery et al. 2022 §5.1) the run goes back to the newest interval
checkpoint at least K updates older (``checkpoint_{epoch}_{update}.pt``, written every
``--save-interval-updates`` and kept only as far back as K needs), then skips the next M global batches of
data unseen. The restored checkpoint brings weights, Adam moments, data position, RNG states and this
monitor's loss history, so the run continues exactly as a run resumed by hand from that checkpoint with
those batches skipped. The train records of the abandoned updates move into the ``rollback`` record (so the
log stays ordered by update and resume can cut it), and ``checkpoint_last.pt`` is rewritten at once, so a
kill right after a rollback resumes after it. A spike within K updates after the one rolled back is only
warned about: going back again would replay the same instability, possibly forever (a rollback restores
everything, RNG and data position included); so every rollback is K updates of progress past the last one.
"""

from __future__ import annotations

import math
import re
import time
import zlib
from collections import deque
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from mt.common.errors import UserError
from mt.formats.checkpoint import interval_checkpoints

STATS = ("grad_rms", "v_below_eps", "update_rms", "bimodality", "cos")
WINDOW = 100  # losses the running median is taken over
MIN_HISTORY = 20  # updates before spikes are judged
MAX_SAMPLES = 4096  # coordinates per parameter group

_LAYER = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")


def group_of(name: str) -> str:
    """Parameter name -> group: ``embed``, ``enc0.attn``, ``dec1.cross_attn``, ``enc1.ffn``, ``enc1.experts``,
    ``enc1.gate`` (MoE router / CMR gate), ``enc1.adapter``, ``norm`` ..."""
    m = _LAYER.match(name)
    if m:
        side, layer, rest = m.groups()
        head = f"{side[:3]}{layer}"
        if rest.startswith("encoder_attn"):
            part = "cross_attn"
        elif rest.startswith("self_attn"):
            part = "attn"
        elif rest.startswith(("ffn", "final_layer_norm")):
            part = "experts" if ".experts." in rest else "gate" if re.search(r"(^|\.)(wg|gate)\.", rest) else "ffn"
        else:
            part = rest.split(".")[0]
        return f"{head}.{part}"
    if "embed" in name:
        return "embed"
    if name.split(".")[-2:-1] == ["layer_norm"] or name.startswith(("encoder.layer_norm", "decoder.layer_norm")):
        return "norm"
    return name.split(".")[0]


class AdamStats:
    """The statistics of the module docstring, per group, from an AdamW's state (sampled coordinates).

    One pass: the sampled coordinates of every tensor are concatenated (tensors of a group next to each
    other), then each group's sums (of g², r, r², r³, r⁴, r·g, and of sqrt(v̂) < eps) are taken over its
    slice, so the cost is a few small operations per tensor and per group."""

    def __init__(
        self, named_params: Iterable[tuple[str, torch.nn.Parameter]], max_samples: int = MAX_SAMPLES, seed: int = 0
    ) -> None:
        by_group: dict[str, list[tuple[str, torch.nn.Parameter]]] = {}
        for name, p in named_params:
            if p.requires_grad:
                by_group.setdefault(group_of(name), []).append((name, p))
        self.names = list(by_group)
        self.entries: list[tuple[torch.nn.Parameter, torch.Tensor | None, int]] = []  # (param, sample, group)
        for gi, params in enumerate(by_group.values()):
            total = sum(p.numel() for _, p in params)
            for name, p in params:
                want = max(1, math.ceil(max_samples * p.numel() / total))
                idx = None
                if want < p.numel():
                    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
                    idx = torch.from_numpy(np.sort(rng.choice(p.numel(), want, replace=False))).to(p.device)
                self.entries.append((p, idx, gi))

    def compute(self, optimizer: torch.optim.Optimizer) -> dict[str, dict[str, float | None]]:
        """Call after ``optimizer.step()`` and before ``zero_grad``."""
        hyper = {id(p): grp for grp in optimizer.param_groups for p in grp["params"]}
        gs, ms, vs, c1, c2, eps, gid, sizes = [], [], [], [], [], [], [], []
        for p, idx, gi in self.entries:
            st = optimizer.state.get(p)
            if p.grad is None or not st or "exp_avg" not in st:
                continue
            h = hyper[id(p)]
            t = float(st["step"])
            parts = [x.detach().reshape(-1) for x in (p.grad, st["exp_avg"], st["exp_avg_sq"])]
            if idx is not None:
                parts = [x.index_select(0, idx) for x in parts]
            gs.append(parts[0]), ms.append(parts[1]), vs.append(parts[2])
            c1.append(1 / (1 - h["betas"][0] ** t)), c2.append(1 / (1 - h["betas"][1] ** t)), eps.append(h["eps"])
            gid.append(gi), sizes.append(parts[0].numel())
        if not gs:
            return {}
        dev = gs[0].device
        per = torch.tensor(sizes, device=dev)

        def spread(values: list) -> torch.Tensor:  # one value per tensor -> one per coordinate
            return torch.repeat_interleave(torch.tensor(values, dtype=torch.float64, device=dev), per)

        g = torch.cat(gs).double()
        denom = (torch.cat(vs).double() * spread(c2)).sqrt()
        e = spread(eps)
        r = torch.cat(ms).double() * spread(c1) / (denom + e)
        r2 = r * r
        cols = torch.stack([g * g, (denom < e).double(), r, r2, r2 * r, r2 * r2, r * g])
        present, lengths = [], []  # tensors come group by group: one slice of the samples per group
        for gi, size in zip(gid, sizes):
            if present and present[-1] == gi:
                lengths[-1] += size
            else:
                present.append(gi), lengths.append(size)
        sums = torch.stack([part.sum(1) for part in cols.split(lengths, dim=1)])
        n = torch.tensor(lengths, dtype=torch.float64, device=dev)
        rows = _summaries(n, sums).cpu().tolist()  # one device sync
        return {
            self.names[gi]: {k: (v if math.isfinite(v) else None) for k, v in zip(STATS, row)}
            for gi, row in zip(present, rows)
        }


def _summaries(n: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """Per-group counts and sums (Σg², Σ[below], Σr, Σr², Σr³, Σr⁴, Σrg) -> the STATS columns."""
    g2, below, s1, s2, s3, s4, rg = sums.T
    mu = s1 / n
    m2 = s2 / n - mu**2  # central moments from raw ones (float64)
    m3 = s3 / n - 3 * mu * s2 / n + 2 * mu**3
    m4 = s4 / n - 4 * mu * s3 / n + 6 * mu**2 * s2 / n - 3 * mu**4
    bimodality = (m3**2 / m2**3 + 1) / (m4 / m2**2)
    cos = rg / (s2.sqrt() * g2.sqrt())
    return torch.stack([(g2 / n).sqrt(), below / n, (s2 / n).sqrt(), bimodality, cos], dim=1)


class SpikeDetector:
    """Loss against the running median and spread of the last ``WINDOW`` non-spike losses."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.history: deque[float] = deque(maxlen=WINDOW)

    def check(self, loss: float) -> dict[str, float] | None:
        """None, or the spike's numbers; a non-spike loss joins the history."""
        if not math.isfinite(loss):
            return {"loss": loss, "median": math.nan, "spread": math.nan}
        if self.threshold > 0 and len(self.history) >= MIN_HISTORY:
            h = np.fromiter(self.history, dtype=np.float64)
            med = float(np.median(h))
            spread = max(1.4826 * float(np.median(np.abs(h - med))), 0.01 * abs(med))
            if loss > med + self.threshold * spread:
                return {"loss": loss, "median": med, "spread": spread}
        self.history.append(float(loss))
        return None


class Monitor:
    """What ``mt-train`` holds: the statistics, the detector and the rollback bookkeeping (checkpointed)."""

    def __init__(
        self,
        model: torch.nn.Module,
        log_interval: int,
        threshold: float = 6.0,
        rollback: int = 0,
        skip: int = 0,
        save_interval: int = 0,
        enabled: bool = True,
        seed: int = 0,
    ) -> None:
        self.log_interval, self.rollback, self.skip, self.save_interval = log_interval, rollback, skip, save_interval
        self.stats = AdamStats(model.named_parameters(), seed=seed) if enabled else None
        self.detector = SpikeDetector(threshold)
        self.pending: dict[str, Any] = {}  # statistics waiting for the next train record
        self.skip_left = 0  # batches still to skip after a rollback
        self.last_spike = -1  # update of the last spike rolled back
        self.spikes = self.rollbacks = 0
        self.episode = (-1, -1)  # (first, last) update of the current run of spiking updates (for warnings)

    # --- statistics ---------------------------------------------------------------------------
    def after_step(self, optimizer: torch.optim.Optimizer, update: int) -> None:
        """After ``optimizer.step()`` of ``update`` (1-based): statistics when that update will be logged."""
        if self.stats is None or update % self.log_interval:
            return
        t0 = time.perf_counter()
        self.pending = {"stability": self.stats.compute(optimizer)}
        self.pending["monitor_ms"] = 1000 * (time.perf_counter() - t0)

    def take(self) -> dict[str, Any]:
        out, self.pending = self.pending, {}
        return out

    # --- spikes ------------------------------------------------------------------------------------
    def check(self, update: int, loss: float) -> dict[str, Any] | None:
        spike = self.detector.check(loss)
        if spike is None:
            return None
        self.spikes += 1
        first = self.episode[0] if self.episode[1] == update - 1 else update
        self.episode = (first, update)
        spike["update"] = update
        return spike

    def should_warn(self, update: int) -> bool:
        """One warning when the loss starts spiking, then one every 50 updates while it keeps spiking."""
        return (update - self.episode[0]) % 50 == 0

    def wants_rollback(self, update: int) -> bool:
        """A rollback is configured and this spike is more than K updates past the last one rolled back."""
        return self.rollback > 0 and (self.last_spike < 0 or update > self.last_spike + self.rollback)

    def snapshot_for(self, save_dir: Path, update: int) -> Path | None:
        """The newest interval checkpoint at least ``--spike-rollback`` updates before ``update``."""
        older = [(u, p) for u, p in interval_checkpoints(save_dir) if u <= update - self.rollback]
        return max(older)[1] if older else None

    def keep_snapshots(self) -> int:
        """Interval checkpoints to keep so that one K updates back always exists."""
        return self.rollback // max(self.save_interval, 1) + 2

    def rolled_back(self, restored: dict[str, Any] | None, spike_update: int) -> None:
        """After loading a snapshot: its loss history, and this run's bookkeeping (which the snapshot predates)."""
        spikes, rollbacks = self.spikes, self.rollbacks
        self.load_state_dict(restored)
        self.spikes, self.rollbacks = spikes, rollbacks + 1
        self.last_spike, self.skip_left = spike_update, self.skip
        self.pending = {}

    def take_skip(self, available: int) -> int:
        n = min(self.skip_left, available)
        self.skip_left -= n
        return n

    # --- checkpoint ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "history": list(self.detector.history),
            "skip_left": self.skip_left,
            "last_spike": self.last_spike,
            "spikes": self.spikes,
            "rollbacks": self.rollbacks,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.detector.history.clear()
        self.detector.history.extend(float(x) for x in state.get("history", []))
        self.skip_left = int(state.get("skip_left", 0))
        self.last_spike = int(state.get("last_spike", -1))
        self.spikes, self.rollbacks = int(state.get("spikes", 0)), int(state.get("rollbacks", 0))


def spike_warning(spike: dict[str, Any], threshold: float) -> str:
    """A fairseq-style one-line warning."""
    if not math.isfinite(spike["loss"]):
        return f"WARNING: loss spike at update {spike['update']}: loss is {spike['loss']}"
    return (
        f"WARNING: loss spike at update {spike['update']}: loss {spike['loss']:.3f} > running median "
        f"{spike['median']:.3f} + {threshold:g} x spread {spike['spread']:.3f}"
    )


def move_abandoned_records(log, target: int, record: dict[str, Any]) -> None:
    """Cut ``log`` (a ``mt.formats.trainlog.TrainLog``) back to ``target`` and append ``record`` holding what was
    cut."""
    if not log.enabled:
        return
    record["abandoned"] = [r for r in log.read() if int(r.get("update", 0)) > target]
    log.truncate_after(target)
    log.write(record)


def check_flags(rollback: int, skip: int, threshold: float, save_interval: int) -> None:
    if rollback < 0 or skip < 0:
        raise UserError(f"--spike-rollback and --spike-skip must be >= 0, got {rollback} and {skip}")
    if threshold < 0:
        raise UserError(f"--spike-threshold must be >= 0 (0 = no spike detection), got {threshold}")
    if rollback and threshold == 0:
        raise UserError("--spike-rollback needs spike detection: set --spike-threshold > 0")
    if rollback and save_interval <= 0:
        raise UserError(
            f"--spike-rollback {rollback} rolls back to interval checkpoints: set --save-interval-updates "
            f"(e.g. {max(rollback // 2, 1)})"
        )
    if skip and not rollback:
        raise UserError("--spike-skip only applies with --spike-rollback K")
