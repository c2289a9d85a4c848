"""Checkpoint files of ``mt-train``: the one module that writes, reads and checks them.

Layout of ``{save_dir}``: ``checkpoint_last.pt`` (resume point), ``checkpoint_best.pt`` (best validation
metric), ``checkpoint{epoch}.pt`` (end of each epoch, pruned by ``--keep-last-epochs``), and with
``--spike-rollback`` ``checkpoint_{epoch}_{update}.pt`` (every ``--save-interval-updates``, fairseq's name,
kept only as far back as the rollback needs).

A checkpoint is one ``torch.save`` dict that loads with ``torch.load(..., weights_only=True)``: tensors,
numbers, strings, lists, tuples and dicts only (configs as plain dicts, RNG states as tensors/lists)::

    format, format_version, code_version        what wrote it
    save_id                                     random id of this save (the same in its copies): tells
                                                work done with one model from work done with another
    model_config                                TransformerConfig.to_dict()
    train_config                                the run's TrainConfig as a dict (for the record)
    resolved_paths                              data / spm_model as absolute paths (train_config keeps them
                                                as typed, often relative to where mt-train ran)
    dict_checksum, lang_pairs                   what it was trained on
    dict_added                                  tokens the model has beyond the data's dict.txt, appended
                                                in this order (``mt-train --add-langs``; usually empty)
    model, optimizer                            state_dicts
    num_updates, data_state, best, wall_time    loop position (DataState.to_dict()), best metric so far
    stability                                   mt.train.stability's loss history and rollback state (absent
                                                before it existed: an empty history)
    rng                                         one entry per rank: python / numpy / torch (/ cuda) states

Writes are atomic (temp file in the same folder, fsync, rename), so a kill at any moment leaves either
the previous file or the new one. Extra copies (best, epoch) are made from the finished file, each atomic.

Sparse MoE. A model with experts adds ``moe = {shards, expert_keys, expert_param_ids}`` (which model
keys and optimizer entries are expert tensors, stacked along dim 0 with E/shards experts each). With one
shard (a single process) they stay in the one file. Under expert parallelism (W > 1 ranks) the file above
holds everything else (written once, by rank 0) plus ``moe.save_id``, and each rank r writes its experts
to ``{stem}-rank-{r}.pt`` beside it (``{"format": FORMAT + "/experts", save_id, rank, shards, model,
optimizer_state}``), e.g. ``checkpoint_last.pt`` + ``checkpoint_last-rank-0.pt`` ... ``-rank-{W-1}.pt``.
A save is a small commit protocol so that a kill at any moment still leaves one consistent checkpoint:
every rank writes ``{shard}.pending``, then rank 0 replaces the shared file (the commit point), then each
rank renames its pending file into place; a reader whose shard has the wrong ``save_id`` takes the
matching ``.pending`` file. ``load_checkpoint(path, rank=r, world=W)`` re-shards on the fly: it
concatenates the experts of the saved shards and keeps expert range [r*E/W, (r+1)*E/W) (weights and Adam
moments), so a run saved with W=2 resumes with W=1 or 4 and ``load_checkpoint(path)`` returns the whole
model. The save directory must be visible to every rank (a shared file system across nodes).
One process can write the same layout with ``save_with_expert_files`` (mt-import, mt-moe-prune: one
expert per shard, written one at a time, so a model larger than memory can be written; inference
memory-maps each shard's experts, see ``expert_views``).
"""

from __future__ import annotations

import functools
import os
import random
import re
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

import mt
from mt.common.errors import UserError
from mt.common.files import atomic_write, sha256_file

FORMAT = "nllb-mini/mt-train"
FORMAT_VERSION = 2  # 2: expert shards (``moe``); version-1 files load unchanged
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
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- writing ------------------------------------------------------------------------------------
def shard_path(path: str | os.PathLike, rank: int) -> Path:
    """``checkpoint_last.pt`` -> ``checkpoint_last-rank-{rank}.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}-rank-{rank}{path.suffix}")


def _pending(path: Path) -> Path:
    return path.with_name(path.name + ".pending")


def weights_state(
    model_config: dict[str, Any],
    weights: dict[str, torch.Tensor],
    dict_checksum: str,
    train_config: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A loadable checkpoint of weights alone: no optimizer, no training progress (mt-import's output, a
    benchmark's random model). ``extra`` adds fields (``imported``: where the weights came from)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "code_version": code_version(),
        "model_config": model_config,
        "train_config": train_config or {},
        "dict_checksum": dict_checksum,
        "lang_pairs": [],
        "model": weights,
        "num_updates": 0,
        **extra,
    }


def save_checkpoint(
    state: dict[str, Any],
    path: str | os.PathLike,
    copies: Sequence[str | os.PathLike] = (),
    rank: int = 0,
    world: int = 1,
) -> None:
    """Write ``state`` to ``path`` atomically, then atomic copies to ``copies``.

    Called on every rank (rank 0 alone writes unless the state has expert shards, see the module
    docstring; with shards the call is collective).
    """
    path = Path(path)
    moe = state.get("moe")
    if moe and int(moe.get("shards", 1)) > 1:
        _save_sharded(state, path, [Path(c) for c in copies], rank)
        return
    if rank != 0:
        return
    state = {**state, "save_id": uuid.uuid4().hex}
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    for extra in copies:
        extra = Path(extra)
        with atomic_write(extra, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 22)


def _expert_shard(
    save_id: str,
    rank: int,
    shards: int,
    model: dict[str, torch.Tensor],
    optimizer_state: dict[int, Any],
    num_updates: Any,
) -> dict[str, Any]:
    """The content of ``{stem}-rank-{rank}.pt`` (see the module docstring)."""
    return {
        "format": FORMAT + "/experts",
        "save_id": save_id,
        "rank": rank,
        "shards": shards,
        "num_updates": num_updates,
        "model": model,
        "optimizer_state": optimizer_state,
    }


def save_with_expert_files(
    state: dict[str, Any], path: str | os.PathLike, shards: Iterable[dict[str, torch.Tensor]]
) -> list[Path]:
    """One process writes a checkpoint whose experts are in ``{stem}-rank-{q}.pt`` files (no optimizer).

    ``shards`` yields each shard's expert tensors in turn (E/shards experts of every MoE layer, stacked
    along dim 0), so a caller can produce them one at a time: only one shard is in memory while it is
    written (mt-import streams a model larger than memory this way). ``state["moe"]`` gives ``shards`` and
    ``expert_keys``. The expert files are written first, the shared file last (the commit point, as in a
    sharded training save: each is written as ``.pending`` and renamed once the shared file names the new
    ``save_id``). Returns the files written; on failure before the commit none of them is left.
    """
    path = Path(path)
    moe = state["moe"]
    n, save_id = int(moe["shards"]), uuid.uuid4().hex
    pending: list[Path] = []
    try:
        for q, model in enumerate(shards):
            if q >= n or set(model) != set(moe["expert_keys"]):
                raise ValueError(f"expert shard {q}: expected {n} shards with the keys {moe['expert_keys'][:2]}...")
            final = shard_path(path, q)
            with atomic_write(_pending(final), "wb") as fh:  # as a sharded training save: see the module docstring
                torch.save(_expert_shard(save_id, q, n, model, {}, state.get("num_updates")), fh)
            pending.append(_pending(final))
            del model
        if len(pending) != n:
            raise ValueError(f"{len(pending)} expert shards written, the checkpoint says {n}")
        shared = {**state, "save_id": save_id, "moe": {**moe, "expert_param_ids": [], "save_id": save_id}}
        with atomic_write(path, "wb") as fh:  # the commit point
            torch.save(shared, fh)
    except BaseException:
        for p in pending:
            p.unlink(missing_ok=True)
        raise
    written = [path]
    for p in pending:
        final = p.with_name(p.name[: -len(".pending")])
        os.replace(p, final)
        written.append(final)
    return written


def _save_sharded(state: dict[str, Any], path: Path, copies: list[Path], rank: int) -> None:
    from mt.common import distributed

    moe = state["moe"]
    save_id = distributed.broadcast_object(uuid.uuid4().hex)
    keys, ids = set(moe["expert_keys"]), set(moe["expert_param_ids"])
    opt = state["optimizer"]
    shard = _expert_shard(
        save_id,
        rank,
        int(moe["shards"]),
        {k: v for k, v in state["model"].items() if k in keys},
        {i: v for i, v in opt["state"].items() if i in ids},
        state.get("num_updates"),
    )
    shared = dict(state)
    shared["model"] = {k: v for k, v in state["model"].items() if k not in keys}
    shared["optimizer"] = {**opt, "state": {i: v for i, v in opt["state"].items() if i not in ids}}
    shared["moe"] = {**moe, "save_id": save_id}
    shared["save_id"] = save_id
    for target in [path, *copies]:
        final = shard_path(target, rank)
        with atomic_write(_pending(final), "wb") as fh:
            torch.save(shard, fh)
        distributed.barrier()
        if rank == 0:  # the commit point: the shared file names the save_id of the new shards
            with atomic_write(target, "wb") as fh:
                torch.save(shared, fh)
        distributed.barrier()
        os.replace(_pending(final), final)
    distributed.barrier()


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
        for shard in p.parent.glob(f"{p.stem}-rank-*.pt*"):  # expert shards (and pending ones)
            shard.unlink(missing_ok=True)
    return doomed


def interval_checkpoint_name(epoch: int, update: int) -> str:
    """fairseq's name for a ``--save-interval-updates`` checkpoint (kept for ``--spike-rollback``)."""
    return f"checkpoint_{epoch}_{update}.pt"


def interval_checkpoints(save_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(update, path) of the ``checkpoint_{epoch}_{update}.pt`` files in ``save_dir``, oldest first."""
    found = []
    for p in Path(save_dir).glob("checkpoint_*_*.pt"):
        m = re.fullmatch(r"checkpoint_(\d+)_(\d+)\.pt", p.name)
        if m:
            found.append((int(m.group(2)), p))
    return sorted(found)


def remove_checkpoints(paths: Sequence[Path]) -> None:
    """Delete checkpoint files and their expert shards (and pending ones)."""
    for p in paths:
        p.unlink(missing_ok=True)
        for shard in p.parent.glob(f"{p.stem}-rank-*.pt*"):
            shard.unlink(missing_ok=True)


# --- reading ------------------------------------------------------------------------------------
def refused_object(exc: BaseException) -> str | None:
    """What torch's weights-only unpickler refused to load (``posix.system``, ...); None when ``exc`` is not
    such a refusal (a damaged file also fails in the unpickler, with "Unsupported operand" and the like)."""
    import pickle

    if not isinstance(exc, pickle.UnpicklingError):
        return None
    text = str(exc)
    m = re.search(r"GLOBAL (\S+)", text)  # "Unsupported global: GLOBAL x.y ..." / "unsupported GLOBAL x.y whose ..."
    if m:
        return m.group(1)
    m = re.search(r"(?:unrecognized function|new object for .* but got|Can only build .* but got) (.+?)(?:\n|$)", text)
    return m.group(1).strip() if m else None


def first_reason(exc: BaseException) -> str:
    """The informative line of a load error (torch's weights-only errors start with boilerplate)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [
        ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the documentation", "Please file"))
    ]
    return (useful or lines or [type(exc).__name__])[0][:160]


def _torch_load(path: Path, map_location, mmap: bool = False) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises RuntimeError/UnpicklingError/EOFError/... for broken files
        refused = refused_object(exc)
        if refused is not None:
            raise UserError(
                f"{path}: refused to load it: it refers to the Python object {refused}, and checkpoints are loaded "
                "weights-only, which never imports or runs code from a file; mt-train checkpoints hold only tensors "
                "and plain values, so this one was not written by mt-train or was tampered with: use a checkpoint "
                "from a source you trust"
            ) from None
        reason = first_reason(exc)
        raise UserError(
            f"{path}: checkpoint is corrupt or truncated ({reason}); delete it to start over, or replace it "
            f"with another checkpoint of this run (e.g. {BEST} or checkpoint<epoch>.pt)"
        ) from None


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", rank: int = 0, world: int = 1, mmap: bool = False
) -> dict[str, Any]:
    """Load with ``weights_only=True``; a missing, corrupt, truncated or foreign file is a one-line UserError.

    MoE checkpoints come back with the experts of ``rank`` out of ``world`` (default: all of them),
    whatever the world size that saved them (see the module docstring). ``mmap=True`` (inference): the
    tensors are memory-mapped from the file (nothing is read until used) and the experts are left as
    saved; get them with ``expert_views``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    state = _torch_load(path, "cpu" if mmap else map_location, mmap)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not an mt-train checkpoint (no '{FORMAT}' format marker)")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(
            f"{path}: checkpoint format {state['format_version']} is newer than this code ({FORMAT_VERSION}, "
            f"{code_version()}); upgrade nllb-mini"
        )
    if isinstance(state.get("model_config"), dict):  # fields added after the checkpoint was written: defaults
        from mt.models.config import TransformerConfig

        state["model_config"] = {**TransformerConfig().to_dict(), **state["model_config"]}
    if state.get("moe") and not mmap:
        _reshard(state, path, map_location, rank, world)
    return state


def model_id(path: str | os.PathLike, state: dict[str, Any] | None = None) -> str:
    """What model a checkpoint holds, for deciding whether work done with it may be reused.

    ``save:{id}``: the random id written by every save (a file that keeps its name and size while
    training goes on gets a new one each time); files written before ids existed: their expert-shard
    save id, else ``sha256:{hash of the file}``. ``state``: the checkpoint already loaded, if at hand.
    """
    sid = _save_id(state) if state is not None else None
    if sid is None:
        sid = _save_id(load_checkpoint(path, mmap=True))
    return f"save:{sid}" if sid else f"sha256:{sha256_file(path)}"


def _save_id(state: dict[str, Any]) -> str | None:
    return state.get("save_id") or (state.get("moe") or {}).get("save_id") or None


def expert_views(path: str | os.PathLike, state: dict[str, Any]) -> tuple[dict[str, list[torch.Tensor]], list[Path]]:
    """The expert tensors of a checkpoint loaded with ``mmap=True``, one view per expert (nothing is read).

    Returns ({model key: [expert 0, ..., expert E-1]}, the files they are mapped from). The expert keys
    are removed from ``state["model"]``. Expert-parallel checkpoints: the experts of each rank file,
    memory-mapped as well (each file checked like ``load_checkpoint`` does).
    """
    path = Path(path)
    moe = state.get("moe") or {}
    keys = list(moe.get("expert_keys", []))
    if not moe:  # written without the entry (by hand, or a tool): the experts are the stacked tensors
        keys = [k for k in state["model"] if k.rsplit(".", 2)[-2:-1] == ["experts"]]
    shards = int(moe.get("shards", 1))
    if not keys:
        return {}, []
    if shards == 1:
        views = {k: list(state["model"].pop(k).unbind(0)) for k in keys}
        return views, [path]
    files = [shard_path(path, q) for q in range(shards)]
    views = {k: [] for k in keys}
    for q in range(shards):
        shard = _load_shard(path, q, moe["save_id"], "cpu", mmap=True)
        files[q] = Path(shard["_file"])
        for k in keys:
            views[k].extend(shard["model"][k].unbind(0))
    for k in keys:
        state["model"].pop(k, None)
    return views, files


def _load_shard(path: Path, q: int, save_id: str, map_location, mmap: bool = False) -> dict[str, Any]:
    final = shard_path(path, q)
    for candidate in (final, _pending(final)):  # pending: the save was committed, the rename not yet done
        if candidate.is_file():
            shard = _torch_load(candidate, map_location, mmap)
            if isinstance(shard, dict) and shard.get("save_id") == save_id and int(shard.get("rank", -1)) == q:
                shard["_file"] = str(candidate)
                return shard
    raise UserError(
        f"{final}: expert shard {q} of {path} is missing or belongs to another save (the checkpoint is "
        f"incomplete); copy all {path.stem}-rank-*.pt files along with {path.name}, or use another checkpoint "
        f"of this run (e.g. {BEST} or checkpoint<epoch>.pt)"
    )


def _reshard(state: dict[str, Any], path: Path, map_location, rank: int, world: int) -> None:
    """Replace the state's expert tensors by experts [rank*E/world, (rank+1)*E/world) (in place)."""
    moe = state["moe"]
    saved, keys, ids = int(moe["shards"]), list(moe["expert_keys"]), [int(i) for i in moe["expert_param_ids"]]
    opt_state = (state.get("optimizer") or {}).get("state", {})  # inference-only files have no optimizer
    E = int(state.get("model_config", {}).get("moe_expert_count", 0))
    if E <= 0 or E % saved:
        raise UserError(f"{path}: inconsistent MoE checkpoint ({E} experts in {saved} shards)")
    if saved == 1 and world == 1:
        return
    per_old = E // saved
    if E % world:
        raise UserError(
            f"{path}: the checkpoint has {E} experts per MoE layer, not divisible by the world size {world}; "
            f"run with a number of processes that divides {E}"
        )
    per = E // world
    lo, hi = rank * per, (rank + 1) * per
    if saved > 1:
        shards = {
            q: _load_shard(path, q, moe["save_id"], map_location) for q in range(lo // per_old, (hi - 1) // per_old + 1)
        }
        models = [shards[q]["model"] for q in sorted(shards)]
        opts = [shards[q]["optimizer_state"] for q in sorted(shards)]
        base = min(shards) * per_old
    else:
        models, opts, base = [state["model"]], [opt_state], 0
    a, b = lo - base, hi - base
    for k in keys:
        full = models[0][k] if len(models) == 1 else torch.cat([m[k] for m in models])
        state["model"][k] = full[a:b].clone()
    for i in ids:
        entries = [o.get(i) for o in opts]
        if all(e is None for e in entries):
            opt_state.pop(i, None)
            continue
        ref = next(e for e in entries if e is not None)
        merged = {}
        for name, v in ref.items():
            if torch.is_tensor(v) and v.dim() > 0:  # moments: one row per expert
                parts = [e[name] if e is not None else torch.zeros_like(v) for e in entries]
                merged[name] = (parts[0] if len(parts) == 1 else torch.cat(parts))[a:b].clone()
            else:  # step counters and the like
                merged[name] = v
        opt_state[i] = merged
    state["moe"] = {**moe, "shards": world}
    state["moe"].pop("save_id", None)


def load_weights(
    model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | os.PathLike, new_ok=None
) -> list[str]:
    """``model.load_state_dict(weights)`` with one-line errors; keys for which ``new_ok(key)`` holds may be
    missing from ``weights`` (e.g. adapters added on top of a pretrained model). Returns those keys."""
    try:
        result = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # size mismatches
        detail = " ".join(str(exc).split())[:200]
        raise UserError(
            f"{path}: checkpoint weights do not fit this model ({detail}); pass the same --arch and flags"
        ) from None
    missing = [k for k in result.missing_keys if not (new_ok and new_ok(k))]
    if missing or result.unexpected_keys:
        what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(result.unexpected_keys[:3])}"
        raise UserError(f"{path}: checkpoint weights do not fit this model ({what}); pass the same --arch and flags")
    return [k for k in result.missing_keys if k not in missing]


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
    diffs = [
        f"{k}={saved.get(k)} (this run: {model_config.get(k)})"
        for k in shape_fields
        if saved.get(k) != model_config.get(k)
    ]
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
