"""The JSON-lines training log ``{save_dir}/train_log.jsonl`` (what eval's plots read).

One JSON object per line, each with ``type`` and ``update``:

- ``start``: ``update, epoch, world_size, device, params, arch, model_config, lang_pairs, code_version``
- ``train`` (every ``--log-interval`` updates): ``update, epoch, loss, nll_loss, ppl, lr, gnorm,
  tokens_per_s, sentences_per_s, ntokens, wall, aux`` (aux: name -> unweighted value); with sparse MoE /
  CMR layers also ``moe``: statistic -> mean over the interval (``moe/enc1/load``: share of assignments
  per expert, ``moe/enc1/dropped``, ``moe/enc1/balance``, ``cmr/dec3/gate@tgt_lang``: {language: mean gate})
- ``valid``: ``update, epoch, loss, nll_loss, ppl, chrf (mean over directions, when computed), best,
  wall, directions`` (direction -> ``loss, nll_loss, ppl, ntokens[, chrf]``)
- ``curriculum``: ``update, epoch, active`` when pairs join
- ``mixing`` (at each start): ``method, budget, unit, max_epochs, temperature, risk, directions``
  (direction -> ``sentences, tokens, p, epochs[, utility]``: the planned epochs); ``mixing_seen`` (at the
  end): ``sentences, epochs`` per direction, really drawn (``mt.data.mixing``)
- ``train`` records also carry ``stability`` (parameter group -> ``grad_rms, v_below_eps, update_rms,
  bimodality, cos``) and ``monitor_ms``; ``spike``: ``update, spike`` (``loss, median, spread``);
  ``rollback``: ``update`` (the checkpoint's), ``spike``, ``from``, ``skip`` and ``abandoned`` (the records
  of the updates thrown away, moved here so the log stays ordered by update) (``mt.train.stability``)

Losses are in base 2 per target token, as fairseq logs them (``ppl = 2 ** nll_loss``); ``wall`` is the
training wall time in seconds accumulated over resumed runs.

On resume the log is cut back to the checkpoint's update (records past it are from work the kill threw
away and will be logged again), so a killed-and-resumed run leaves the same log as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from mt.common.files import atomic_write


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class TrainLog:
    def __init__(self, path: str | os.PathLike, enabled: bool = True) -> None:
        self.path, self.enabled = Path(path), enabled

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(_clean(record), ensure_ascii=False) + "\n")

    def truncate_after(self, update: int) -> None:
        """Drop records logged after ``update`` (and any torn last line)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill mid-write
            if int(rec.get("update", 0)) <= update:
                kept.append(line)
        with atomic_write(self.path) as fh:
            fh.write("".join(k + "\n" for k in kept))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
