"""Checkpoint files of ``mt-train``: the one module that writes, reads and checks them.

Layout of ``{save_dir}``: ``checkpoint_last.pt`` (resume point), ``checkpoint_best.pt`` (best validation
metric), ``checkpoint{epoch}.pt`` (end of each epoch, pruned by ``--keep-last-epochs``).

A checkpoint is one ``torch.save`` dict that loads with ``torch.load(..., weights_only=True)``: tensors,
numbers, strings, lists, tuples and dicts only (configs as plain dicts, RNG states as tensors/lists)::

    format, format_version, code_version        what wrote it
    model_config                                TransformerConfig.to_dict()
    train_config                                the run's TrainConfig as a dict (for the record)
    dict_checksum, lang_pairs                   what it was trained on
    model, optimizer                            state_dicts
    num_updates, data_state, best, wall_time    loop position (DataState.to_dict()), best metric so far
    rng                                         one entry per rank: python / numpy / torch (/ cuda) states

Writes are atomic (temp file in the same folder, fsync, rename), so a kill at any moment leaves either
the previous file or the new one. Extra copies (best, epoch) are made from the finished file, each atomic.

Expert parallelism later: rank-local expert weights will go to ``{name}-shard{rank}.pt`` beside the
shared file; ``save_checkpoint`` / ``load_checkpoint`` are the two functions to extend.
"""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import mt
from mt.errors import UserError
from mt.util import atomic_write

FORMAT = "nllb-mini/mt-train"
FORMAT_VERSION = 1
LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when run from a checkout (best effort)."""
    version = mt.__version__
    try:
        root = Path(mt.__file__).resolve().parent.parent
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            version += f"+g{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return version


# --- RNG states --------------------------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """This process's python, numpy, torch (and CUDA) RNG states, as weights_only-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((int(py[-1]), tuple(int(x) for x in py[:-1]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- writing ------------------------------------------------------------------------------------
def save_checkpoint(state: dict[str, Any], path: str | os.PathLike, copies: Sequence[str | os.PathLike] = ()) -> None:
    """Write ``state`` to ``path`` atomically, then atomic copies to ``copies``."""
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    for extra in copies:
        extra = Path(extra)
        with atomic_write(extra, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 22)


def epoch_checkpoint_name(epoch: int) -> str:
    return f"checkpoint{epoch}.pt"


def prune_epoch_checkpoints(save_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` ``checkpoint{N}.pt`` (keep_last < 0: keep all)."""
    if keep_last < 0:
        return []
    found = []
    for p in Path(save_dir).glob("checkpoint*.pt"):
        m = re.fullmatch(r"checkpoint(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(1)), p))
    found.sort()
    doomed = [p for _, p in found[: max(len(found) - keep_last, 0)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


# --- reading ------------------------------------------------------------------------------------
def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True``; a missing, corrupt, truncated or foreign file is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/... for broken files
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: checkpoint is corrupt or truncated ({reason}); delete it to start over, or replace it "
            f"with another checkpoint of this run (e.g. {BEST} or checkpoint<epoch>.pt)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not an mt-train checkpoint (no '{FORMAT}' format marker)")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format {state['format_version']} is newer than this code ({FORMAT_VERSION}, "
            f"{code_version()}); upgrade nllb-mini"
        )
    return state


def check_compatible(
    state: dict[str, Any],
    path: str | os.PathLike,
    model_config: dict[str, Any],
    dict_checksum: str,
    shape_fields: Sequence[str],
    lang_pairs: Sequence[str] | None = None,
) -> None:
    """One-line UserError when ``state`` was trained with another dictionary, shape or language pairs."""
    if state.get("dict_checksum") != dict_checksum:
        raise UserError(
            f"{path}: checkpoint was trained with another dictionary (checksum {state.get('dict_checksum')} != "
            f"{dict_checksum} of this data's dict.txt); use the data directory it was trained on or another --save-dir"
        )
    saved = state.get("model_config", {})
    diffs = [f"{k}={saved.get(k)} (this run: {model_config.get(k)})" for k in shape_fields if saved.get(k) != model_config.get(k)]
    if diffs:
        flags = ", ".join(diffs[:3]) + (" ..." if len(diffs) > 3 else "")
        raise UserError(
            f"{path}: checkpoint has another architecture: {flags}; pass the same --arch and overrides, "
            "or use another --save-dir"
        )
    if lang_pairs is not None and list(state.get("lang_pairs", [])) != list(lang_pairs):
        raise UserError(
            f"{path}: checkpoint was trained on --lang-pairs {','.join(state.get('lang_pairs', []))}, this run asks "
            f"for {','.join(lang_pairs)}; resume with the same pairs, or start a new --save-dir with "
            f"--finetune-from-model {path}"
        )
