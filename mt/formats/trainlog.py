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

# Names of the format, for the code that writes records and the code that reads them (mt-eval report,
# eval.train_stats): record kinds (the value of KEY_TYPE) and the keys the readers rely on.
KEY_TYPE = "type"
KEY_UPDATE = "update"  # every record
KEY_LOSS = "loss"  # train and valid records; the spike of a spike / rollback record
KEY_DIRECTIONS = "directions"  # valid: direction -> {loss, nll_loss, ppl, ntokens[, chrf]}
KEY_STABILITY = "stability"  # train: parameter group -> statistic -> value
KEY_MONITOR_MS = "monitor_ms"  # train: the stability monitor's cost
KEY_SPIKE = "spike"  # spike / rollback: {update, loss, median, spread}
KEY_MEDIAN = "median"
KEY_SPREAD = "spread"
KEY_SKIP = "skip"  # rollback: updates skipped after the rollback
KEY_ABANDONED = "abandoned"  # rollback: the train records of the updates thrown away
TYPE_START = "start"
TYPE_TRAIN = "train"
TYPE_VALID = "valid"
TYPE_CURRICULUM = "curriculum"
TYPE_MIXING = "mixing"
TYPE_MIXING_SEEN = "mixing_seen"
TYPE_SPIKE = "spike"
TYPE_ROLLBACK = "rollback"


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
            if int(rec.get(KEY_UPDATE, 0)) <= update:
                kept.append(line)
        with atomic_write(self.path) as fh:
            fh.write("".join(k + "\n" for k in kept))

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_records(path: str | os.PathLike) -> tuple[list[dict[str, Any]], int]:
    """The JSON-object lines of a log written by this module or by another tool, and how many non-blank lines
    were not JSON objects (torn by a kill, or foreign); a byte-order mark is ignored."""
    records, bad = [], 0
    with open(path, encoding="utf-8-sig", errors="replace") as fh:  # -sig: a byte-order mark breaks line 1's JSON
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(rec, dict):
                records.append(rec)
            else:
                bad += 1
    return records, bad
