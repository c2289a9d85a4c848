"""``mt-train``: train a multilingual Transformer on binarized data (fairseq flag names).

Flow: flags (``mt.train.cli``) -> ``TrainConfig`` -> ``train(cfg)``. ``train`` builds the datasets and the temperature
sampler (``mt.data.sampler``), the model (``mt.models``), Adam + inverse-sqrt schedule (``mt.train.optim``),
the criterion (``mt.train.criterion``), then runs the update loop with validation (``mt.train.validate``),
checkpoints (``mt.formats.checkpoint``) and the JSON-lines log (``mt.formats.trainlog``). The step asks the model for
decoder states at non-padding target positions only (``features_only``) and lets the criterion fuse
the vocabulary projection with the loss; ``--bf16`` runs forward and loss under bfloat16 autocast with
fp32 weights and optimizer state.

Exact resume. Everything a run depends on is either in ``checkpoint_last.pt`` or a pure function of
``--seed``: weights, optimizer moments, the update count (the LR schedule is a function of it), the data
position (``DataState``: epoch, plan start, sentences consumed, batch index; the batches themselves are
re-planned from the seed) and every RNG state (python, numpy, torch, CUDA; one entry per rank). A run
killed at any moment (SIGKILL included) and restarted with the same command therefore redoes exactly the
updates it lost and ends with weights bitwise equal to an uninterrupted run on the same machine and
thread count. SIGTERM / first Ctrl-C: finish the current update, save ``checkpoint_last.pt``, exit.

Mixing and stability. ``--sampling-method`` picks how the budget is shared over directions (temperature,
UniMax, UtiliMax: ``mt.data.mixing``); ``mt.train.stability`` logs Adam statistics per parameter group every
``--log-interval`` updates, warns about loss spikes and, with ``--spike-rollback K --spike-skip M``, goes back
to an interval checkpoint K updates older and skips M batches (its loss history is in the checkpoint, so
exact resume holds through a rollback).

Data parallelism. ``torchrun --nproc_per_node N`` starts N ranks (gloo on CPU, nccl on GPU). Every rank
plans the same global batches; each reads every N-th sentence of each one (``shard_rows``). Losses are
sums divided by the target-token count of the whole update (all micro-batches of ``--update-freq``, all
ranks), times N to undo DDP's gradient averaging, so N ranks compute the same update as one process up
to float summation order. A rank whose share of a batch is empty runs one sentence with weight 0 so that
collective calls stay matched. Only rank 0 writes checkpoints and logs.

Shard threads (``--cpu-workers``, ``mt.common.threads.pick_workers``: 2 by default on a CPU with 2+ threads,
in one process): each batch is split the same way (every W-th sentence) and the shards run forward and
backward at once in W threads with threads / W torch threads each, their gradients adding up in the one
model's ``.grad``. Each shard's random draws come from a generator seeded from torch's, in shard order
(``mt.models.rng``), so the run is reproducible and resumes exactly. Why: OpenMP's threads meet in every
operator, so on a busy machine the step waits whenever one of them is off its core; shards meet once.

One run per save directory. Rank 0 holds an exclusive lock on ``{save-dir}/.lock`` for the whole run, so a
second ``mt-train`` on the same ``--save-dir`` fails at once naming the holder instead of overwriting its
checkpoints; the lock dies with its process, so a killed run never blocks its resume. Workers started by
torchrun stop (finish the update, save, exit) when their launcher dies (``distributed.watch_launcher``).
"""

from __future__ import annotations

import ast
import contextlib
import errno
import math
import os
import re
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from mt.common import distributed
from mt.common.cpu import bf16_warning
from mt.common.errors import UserError, os_error_message
from mt.common.files import exclusive_lock, refuse_file_in_the_way
from mt.common.flags import arg
from mt.common.langs import check_code, lang_token, parse_pair
from mt.common.threads import pick_workers
from mt.data import mixing
from mt.data.dictionary import Dictionary
from mt.data.pair_dataset import load_direction
from mt.data.sampler import Curriculum, DataState, MultilingualSampler, shard_rows
from mt.formats import checkpoint as ckpt
from mt.formats.trainlog import TrainLog
from mt.models import rng
from mt.models.adapters import is_adapter_param
from mt.models.config import ARCHS, EXTENSION_FIELDS, OVERRIDABLE, ForwardContext, TransformerConfig, arch_config
from mt.models.moe import local_experts
from mt.models.transformer import build_model, num_parameters
from mt.train import expert_parallel as moe_train
from mt.train import stability
from mt.train.criterion import LabelSmoothedCrossEntropy
from mt.train.optim import InverseSqrtSchedule, build_optimizer
from mt.train.validate import LN2, Validator

DEFAULT_ARCH = "transformer_base"


def parse_betas(text: str) -> list[float]:
    """``--adam-betas '(0.9, 0.98)'`` (fairseq's spelling: a Python tuple) -> [0.9, 0.98]."""
    try:
        v = ast.literal_eval(text.strip())
        if isinstance(v, (int, float)):
            v = [v]
        return [float(x) for x in v]
    except (ValueError, SyntaxError, TypeError):
        raise UserError(f"--adam-betas {text!r}: expected two numbers such as '(0.9, 0.98)'") from None


_MODEL, _DATA, _OPT = "model", "data", "optimisation"
_CKPT, _LOG, _SPIKES = "validation and checkpoints", "logging", "stability (loss spikes)"
_MOE, _ADAPTERS = "sparse mixture of experts (NLLB-200 MoE)", "adapters"


@dataclass
class TrainConfig:
    """One ``mt-train`` run; each field with ``arg`` is also its flag (``mt.train.cli``)."""

    data: str = arg(
        "",
        "binarized data directory (dict.txt, {split}.{src}-{tgt}.{lang}.bin/.idx, spm.model)",
        positional=True,
        required=True,
    )
    lang_pairs: list[str] = arg(
        [], "comma-separated directions, e.g. eng_Latn-deu_Latn,deu_Latn-eng_Latn", required=True
    )
    save_dir: str = arg("checkpoints", "checkpoints and train_log.jsonl")
    # "": the starting checkpoint's model (--finetune-from-model / resume), else DEFAULT_ARCH
    arch: str = arg(
        "",
        f"preset (default: {DEFAULT_ARCH}; with --finetune-from-model or when resuming: the "
        "checkpoint's model, flags below override its settings)",
        choices=list(ARCHS),
        group=_MODEL,
    )
    model_overrides: dict[str, Any] = field(default_factory=dict)  # --encoder-layers etc. (mt.train.moe_flags)
    max_source_positions: int = arg(512, "longer sources are skipped", group=_MODEL)
    max_target_positions: int = arg(512, "longer targets are skipped", group=_MODEL)
    # data
    sampling_temperature: float = arg(1.5, "p(pair) ∝ n^(1/T); 1 = proportional, large = uniform", group=_DATA)
    sampling_method: str = arg(
        "temperature",
        "temperature: p ∝ n^(1/T); unimax: uniform over directions, at most --unimax-max-epochs each; "
        "utilimax: maximise utility - risk under the same caps",
        choices=list(mixing.METHODS),
        group=_DATA,
    )
    unimax_max_epochs: float = arg(
        1.0,
        "unimax/utilimax: epochs of a direction at most; the rest goes to the others",
        metavar="N",
        group=_DATA,
    )
    utilities: str = arg(
        "",
        "utilimax: utility per direction, a file of 'direction<TAB>utility' lines (mt-eval utilities) "
        "or inline; unlisted pairs get 0",
        metavar="FILE|PAIR=U,...",
        group=_DATA,
    )
    utilimax_risk: float = arg(
        1.0, "utilimax: weight of the risk (concentration) term; larger = closer to UniMax", group=_DATA
    )
    virtual_epoch_size: int = arg(0, "sentences per epoch (default: all training sentences)", group=_DATA)
    curriculum: str = arg("", "TSV 'pair<TAB>start_update': pairs that join later", group=_DATA)
    max_tokens: int = arg(4096, "max padded tokens per batch, source or target whichever larger", group=_DATA)
    batch_size: int = arg(0, "max sentences per batch (default: no limit)", group=_DATA)
    required_seq_len_multiple: int = arg(
        1,
        "pad each training batch's source and target lengths to a multiple of N (fewer distinct GEMM shapes "
        "for kernels compiled per shape; losses unchanged); --max-tokens counts unpadded lengths",
        group=_DATA,
    )
    spm_model: str = arg(
        "",
        "SentencePiece model for chrF detokenisation (default: DATA/spm.model, "
        "else the one beside --finetune-from-model)",
        group=_DATA,
    )
    # optimisation
    label_smoothing: float = arg(0.1, group=_OPT)
    lr: float = arg(5e-4, "peak learning rate", group=_OPT)
    adam_betas: list[float] = arg(
        [0.9, 0.98], "(default: (0.9, 0.98))", type=parse_betas, show_default=False, group=_OPT
    )
    adam_eps: float = arg(1e-8, group=_OPT)
    weight_decay: float = arg(0.0, "decoupled, as fairseq's adam (default: %(default)s)", group=_OPT)
    warmup_updates: int = arg(4000, "inverse-sqrt warmup", group=_OPT)
    warmup_init_lr: float = arg(-1.0, "(default: 0 with warmup)", show_default=False, group=_OPT)
    clip_norm: float = arg(0.0, "clip gradient norm; 0 = off (default: %(default)s)", group=_OPT)
    update_freq: int = arg(1, "accumulate N batches per update", group=_OPT)
    max_update: int = arg(0, "stop after N updates (0 = no limit)", group=_OPT)
    max_epoch: int = arg(0, "stop after N epochs (0 = no limit)", group=_OPT)
    seed: int = arg(1, group=_OPT)
    bf16: bool = arg(False, "bfloat16 autocast (fp32 master weights)", group=_OPT)
    cpu: bool = arg(False, "train on CPU even when a GPU is present", group=_OPT)
    threads: int = arg(
        0,
        "torch intra-op threads (default: every CPU this process may use, OpenMP waiting passively; see "
        "mt.common.threads; OMP_NUM_THREADS also counts as a choice)",
        group=_OPT,
    )
    cpu_workers: int = arg(
        0,
        "CPU training: run each batch as N shards in N threads at once, each with threads / N torch threads "
        "(one meeting per batch instead of one per operator: faster on a busy machine); default 0: 2 where "
        "training on the CPU in one process with 2+ threads, else 1 (see mt.common.threads.pick_workers)",
        metavar="N",
        group=_OPT,
    )
    # validation and checkpoints
    validate_interval: int = arg(1, "validate every N epochs", group=_CKPT)
    validate_interval_updates: int = arg(0, "also validate every N updates", group=_CKPT)
    eval_chrf: int = arg(0, "greedy-decode N valid sentences per direction, log chrF++", metavar="N", group=_CKPT)
    best_checkpoint_metric: str = arg("loss", choices=["loss", "chrf"], group=_CKPT)
    save_interval_updates: int = arg(0, "save checkpoint_last.pt every N updates", group=_CKPT)
    keep_last_epochs: int = arg(-1, "keep only the last N checkpoint<epoch>.pt; -1 = all", group=_CKPT)
    no_epoch_checkpoints: bool = arg(False, "do not write checkpoint<epoch>.pt", group=_CKPT)
    finetune_from_model: str = arg(
        "",
        "start from these weights (an mt-train or mt-import checkpoint); optimizer, LR schedule, "
        "update count and data position start fresh (fairseq's semantics)",
        group=_CKPT,
    )
    # "xxx_Latn" or "xxx_Latn=yyy_Latn" (row initialised from yyy)
    add_langs: list[str] = arg(
        [],
        "with --finetune-from-model: new language tokens, appended after the model's last token "
        "(every old id stays; spm.model unchanged); each new embedding row starts as yyy_Latn's row, "
        "or as the mean of the language-token rows. With --freeze-base the rows stay as initialised "
        "and the adapters learn the language",
        metavar="xxx_Latn[=yyy_Latn],...",
        group=_CKPT,
    )
    # logging
    log_interval: int = arg(100, "log every N updates", group=_LOG)
    no_progress_bar: bool = arg(False, "plain log lines instead of a tqdm bar", group=_LOG)
    # stability (mt.train.stability)
    spike_threshold: float = arg(
        6.0,
        "a loss above the running median + Z x spread is a spike: warned and logged; 0 = off",
        metavar="Z",
        group=_SPIKES,
    )
    spike_rollback: int = arg(
        0,
        "on a spike, go back to the interval checkpoint at least K updates older (needs --save-interval-updates)",
        metavar="K",
        group=_SPIKES,
    )
    spike_skip: int = arg(
        0, "after a rollback, skip the next M batches of data (default: %(default)s)", metavar="M", group=_SPIKES
    )
    # sparse MoE / adapters, training side (the model side is in model_overrides, see mt.train.moe_flags)
    moe_gate_loss_wt: float = arg(
        0.01,
        "weight of the load-balancing loss E * sum_e f_e * P_e (mean over MoE layers; default: %(default)s)",
        group=_MOE,
    )
    moe_z_loss_wt: float = arg(0.0, "weight of the router z-loss (default: %(default)s)", group=_MOE)
    cmr_gate_loss_wt: float = arg(
        0.0,
        "weight of the CMR budget loss |mean CMR gate - p| (mean over the tokens of all CMR "
        "layers, p = --cmr-gate-loss-p; fairseq's flag). NLLB's CMR runs used 0.1 "
        "(default: %(default)s, fairseq's: off)",
        metavar="W",
        group=_MOE,
    )
    freeze_base: bool = arg(
        False,
        "train only the adapters (and hyper-network); with --finetune-from-model, to add languages",
        group=_ADAPTERS,
    )

    def check(self) -> "TrainConfig":
        if not self.lang_pairs:
            raise UserError("--lang-pairs is required, e.g. --lang-pairs eng_Latn-deu_Latn,deu_Latn-eng_Latn")
        for p in self.lang_pairs:
            parse_pair(p)
        if len(set(self.lang_pairs)) != len(self.lang_pairs):
            raise UserError(f"--lang-pairs lists a pair twice: {','.join(self.lang_pairs)}")
        for name in (
            "max_tokens",
            "update_freq",
            "max_source_positions",
            "max_target_positions",
            "log_interval",
            "required_seq_len_multiple",
        ):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.best_checkpoint_metric not in ("loss", "chrf"):
            raise UserError(f"--best-checkpoint-metric must be loss or chrf, got {self.best_checkpoint_metric!r}")
        if self.best_checkpoint_metric == "chrf" and self.eval_chrf <= 0:
            raise UserError("--best-checkpoint-metric chrf needs --eval-chrf N (sentences per direction to decode)")
        if len(self.adam_betas) != 2:
            raise UserError(f"--adam-betas needs two values, got {self.adam_betas}")
        if self.cpu_workers < 0:
            raise UserError(f"--cpu-workers must be 0 (automatic) or more, got {self.cpu_workers}")
        parse_add_langs(self.add_langs)
        mixing.check_flags(self.sampling_method, self.utilities, self.unimax_max_epochs, self.utilimax_risk)
        stability.check_flags(self.spike_rollback, self.spike_skip, self.spike_threshold, self.save_interval_updates)
        return self


def parse_add_langs(specs: list[str]) -> list[tuple[str, str | None]]:
    """``--add-langs`` entries -> (code, code whose embedding row initialises the new one, or None for the mean)."""
    out: list[tuple[str, str | None]] = []
    for spec in specs:
        code, _, init = spec.partition("=")
        check_code(code.strip(), f"--add-langs {spec}")
        if init:
            check_code(init.strip(), f"--add-langs {spec}")
        if any(c == code.strip() for c, _ in out):
            raise UserError(f"--add-langs lists {code.strip()} twice")
        out.append((code.strip(), init.strip() or None))
    return out


# --- the loop ------------------------------------------------------------------------------------
class _Stop:
    """SIGTERM / first SIGINT: stop after the current update and save; a second SIGINT aborts.

    ``launcher``: the torchrun launcher's pid (``distributed.watch_launcher``); ``poll`` treats its death
    as a SIGTERM where the kernel did not send one."""

    def __init__(self, launcher: int | None = None) -> None:
        self.requested = 0  # signal number
        self.launcher = launcher
        self._old: dict[int, Any] = {}

    def poll(self) -> None:
        if not self.requested and distributed.launcher_gone(self.launcher):
            self.requested = signal.SIGTERM
            print(
                f"\nmt-train: the torchrun launcher (pid {self.launcher}) is gone: finishing this update and "
                "saving checkpoint_last.pt",
                file=sys.stderr,
            )

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. called from a test harness thread)
                pass

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = signum
        print(f"\nmt-train: got signal {signum}: finishing this update and saving checkpoint_last.pt", file=sys.stderr)


def _say(di: distributed.DistInfo, msg: str) -> None:
    if di.is_master:
        print(msg, file=sys.stderr, flush=True)


# The one seam for model families other than mt.models' Transformer (mine-train-encoder's LASER models):
# factory(cfg, dictionary, base) -> (model_config, model, criterion); ``base`` is the model_config dict of
# the checkpoint the run starts from (checkpoint_last.pt when resuming, else --finetune-from-model), or
# None for a run from scratch. The model follows the Transformer's
# training interface: ``model(src_tokens, prev_output_tokens, ctx, target_mask=, features_only=True)``
# returns states at the target positions and ``model.output_weight`` is what the criterion scores them
# against; ``criterion(hidden, output_weight, target, aux_losses)`` returns a ``CriterionOutput`` (it is
# used for validation too). ``model_config`` has ``to_dict()`` and ``SHAPE_FIELDS`` (checkpoint checks).
ModelFactory = Callable[["TrainConfig", Dictionary, "dict[str, Any] | None"], "tuple[Any, torch.nn.Module, Any]"]
# how sentences meet the model (mt.data.rows): always the starting checkpoint's, there are no flags for them
LAYOUT_FIELDS = ("source_langtok", "decoder_start")


def transformer_factory(
    cfg: TrainConfig, dictionary: Dictionary, base: dict[str, Any] | None = None
) -> tuple[TransformerConfig, torch.nn.Module, Any]:
    """mt-train's model and label-smoothed CE. From scratch, or with ``--arch``: the preset with the
    fairseq-named overrides. Starting from a checkpoint (``base``) without ``--arch``: that checkpoint's
    model (shape, dropouts, MoE and adapter settings; an imported NLLB-200 model needs no flags) with the
    overrides on top. The row layout is always the checkpoint's; vocabulary, languages and position limits
    always this run's."""
    overrides = {k: v for k, v in cfg.model_overrides.items() if k in OVERRIDABLE or k in EXTENSION_FIELDS}
    run = dict(
        vocab_size=len(dictionary),
        padding_idx=dictionary.pad(),
        max_source_positions=cfg.max_source_positions,
        max_target_positions=cfg.max_target_positions,
        langs=dictionary.langs(),
        adapter_lang_pairs=list(cfg.lang_pairs),
    )
    if base is not None and not cfg.arch:
        model_cfg = TransformerConfig.from_dict({**base, **overrides, **run})
    else:
        model_cfg = arch_config(cfg.arch or DEFAULT_ARCH, **overrides, **run)
        for k in LAYOUT_FIELDS if base is not None else ():
            setattr(model_cfg, k, base.get(k, getattr(model_cfg, k)))
    criterion = LabelSmoothedCrossEntropy(
        cfg.label_smoothing,
        {"moe_gate_loss": cfg.moe_gate_loss_wt, "moe_z_loss": cfg.moe_z_loss_wt, "cmr_gate_loss": cfg.cmr_gate_loss_wt},
    )
    return model_cfg, build_model(model_cfg), criterion


def train(cfg: TrainConfig, model_factory: ModelFactory | None = None) -> dict[str, Any]:
    """Train (or resume) according to ``cfg``; returns a summary (final update, best metric, paths).

    ``model_factory`` (default ``transformer_factory``) builds another model family with this same loop."""
    cfg.check()
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    launcher = distributed.watch_launcher()  # first: a launcher killed during the set-up stops this worker too
    if not Path(cfg.data).is_dir():
        raise UserError(f"{cfg.data}: data directory not found (create it with mt-preprocess)")
    di = distributed.setup(cfg.cpu)
    stop = _Stop(launcher)
    stop.install()
    try:
        with _locked_save_dir(Path(cfg.save_dir), di):
            return _Trainer(cfg, di, stop, model_factory or transformer_factory).run()
    finally:
        stop.restore()
        distributed.cleanup()


def _default_spm(data: Path, finetune_from_model: str) -> str:
    """DATA/spm.model; else the one beside the --finetune-from-model checkpoint (mt-import writes it there, and
    mt-preprocess does not copy it into the data); the recorded path lets mt-translate find it later."""
    beside = Path(finetune_from_model).parent / "spm.model" if finetune_from_model else None
    if not (data / "spm.model").is_file() and beside is not None and beside.is_file():
        return str(beside)
    return str(data / "spm.model")


def _starting_point(cfg: TrainConfig, save_dir: Path) -> tuple[Path | None, dict[str, Any]]:
    """The checkpoint the run starts from (checkpoint_last.pt, else --finetune-from-model, else None) and
    what the set-up needs of it; its tensors are memory-mapped and not read here."""
    last = save_dir / ckpt.LAST
    path = last if last.is_file() else Path(cfg.finetune_from_model) if cfg.finetune_from_model else None
    if path is None:
        return None, {}
    state = ckpt.load_checkpoint(path, mmap=True)
    return path, {k: state.get(k) for k in ("model_config", "dict_added", "dict_checksum")}


def _run_dictionary(
    data_dict: Dictionary, start: dict[str, Any], add_langs: list[str], resuming: bool
) -> tuple[Dictionary, Dictionary, list[tuple[str, str | None]], list[str]]:
    """(the starting checkpoint's dictionary, this run's, the language tokens this run adds with the language
    that initialises each, every token the run's dictionary has beyond the data's dict.txt).

    ``--add-langs`` appends language tokens after the last id of the model's dictionary (after ``<mask>``
    and fairseq's ``madeupword`` rows in a released NLLB model): every old id stays, so data binarized with
    the model's dict.txt and spm.model keep working, and the checkpoint records the tokens (``dict_added``)
    so that the data's dict.txt plus them is its dictionary (``mt.generate.loading``)."""
    before = list(start.get("dict_added") or [])
    start_dict = data_dict.extended(before)
    new: list[tuple[str, str | None]] = []
    for code, init in parse_add_langs(add_langs):
        tok = lang_token(code)
        if tok in start_dict:
            if resuming and tok in before:  # added when the run being resumed started
                continue
            raise UserError(
                f"--add-langs {code}: the model already has the language token {tok}; drop {code} from --add-langs"
            )
        if init and lang_token(init) not in start_dict:
            known = start_dict.langs()
            raise UserError(
                f"--add-langs {code}={init}: the model has no {lang_token(init)} to initialise the new "
                f"row from ({len(known)} languages, e.g. {', '.join(known[:5]) or 'none'})"
            )
        new.append((tok, init))
    if new and (not start or resuming):
        what = (
            "the run being resumed was started without it: --add-langs only applies when a fine-tuning run "
            "starts (use a new --save-dir)"
            if resuming
            else "it adds language tokens to a trained model: pass --finetune-from-model CHECKPOINT"
        )
        raise UserError(f"--add-langs {new[0][0].strip('_')}: {what}")
    tokens = [t for t, _ in new]
    return start_dict, start_dict.extended(tokens), new, before + tokens


@contextlib.contextmanager
def _locked_save_dir(save_dir: Path, di: distributed.DistInfo) -> Iterator[None]:
    """Create ``save_dir`` and hold its lock (rank 0) while the block runs; every rank gets rank 0's refusal.

    Runs before anything is read or written there, so a second run on the same ``--save-dir`` (or one
    that is a file) fails at once and changes nothing. Folders it creates are removed again when the run
    fails before writing anything into them (a missing dict.txt, a refused --finetune-from-model, ...).
    """
    with contextlib.ExitStack() as held:
        problem, created = None, []
        if di.is_master:
            try:
                refuse_file_in_the_way(save_dir, "--save-dir", folder=True)
                created = [p for p in (save_dir, *save_dir.parents) if not p.exists()]
                save_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(exclusive_lock(save_dir, f"--save-dir {save_dir}"))
            except UserError as exc:
                problem = str(exc)
            except OSError as exc:
                problem = f"--save-dir {save_dir}: " + (os_error_message(exc) or str(exc))
        problem = distributed.broadcast_object(problem)
        if problem:
            raise UserError(problem)
        try:
            yield
        except BaseException:
            _remove_unused(created)
            raise


def _remove_unused(created: list[Path]) -> None:
    """Remove the folders a failed run created (innermost first) when they hold nothing but its lock file."""
    with contextlib.suppress(OSError):
        if created and [p.name for p in created[0].iterdir()] == [".lock"]:
            (created[0] / ".lock").unlink()
        for folder in created:
            folder.rmdir()  # fails, and stops here, on a folder that is not empty


class _Trainer:
    def __init__(
        self, cfg: TrainConfig, di: distributed.DistInfo, stop: _Stop, model_factory: ModelFactory = transformer_factory
    ) -> None:
        self.cfg, self.di, self.stop = cfg, di, stop
        self.save_dir = Path(cfg.save_dir)
        self.log = TrainLog(self.save_dir / "train_log.jsonl", enabled=di.is_master)
        data = Path(cfg.data)
        self.start_path, start = _starting_point(cfg, self.save_dir)
        self.base_config = start.get("model_config") if start else None
        self.start_dictionary, self.dictionary, self.new_langs, self.dict_added = _run_dictionary(
            Dictionary.load(data / "dict.txt"),
            start,
            cfg.add_langs,
            resuming=self.start_path == self.save_dir / ckpt.LAST,
        )
        self.langs = self.dictionary.langs()
        self.pad = self.dictionary.pad()
        del start

        # data, in the rows of the model the run starts from (mt.data.rows)
        base = self.base_config or {}
        layout = {k: base.get(k, getattr(TransformerConfig, k)) for k in LAYOUT_FIELDS}
        self.directions = list(cfg.lang_pairs)
        train_sets = [load_direction(data, "train", d, self.dictionary, self.langs, **layout) for d in self.directions]
        keep = []
        slack = cfg.required_seq_len_multiple - 1  # a padded batch must still fit the position tables
        for ds in train_sets:
            k = ds.keep_indices(cfg.max_source_positions - slack, cfg.max_target_positions - slack, cfg.max_tokens)
            keep.append(k)
            if len(k) < len(ds):
                _say(
                    di,
                    f"mt-train: train {ds.name}: skipped {len(ds) - len(k)} of {len(ds)} sentences longer than "
                    f"--max-source-positions {cfg.max_source_positions} / --max-target-positions "
                    f"{cfg.max_target_positions} / --max-tokens {cfg.max_tokens}",
                )
        curriculum = Curriculum.load(cfg.curriculum, self.directions) if cfg.curriculum else None
        self.mixing = mixing.from_config(cfg, train_sets, keep)
        self.sampler = MultilingualSampler(
            train_sets,
            keep,
            cfg.sampling_temperature,
            cfg.max_tokens,
            cfg.seed,
            curriculum,
            cfg.batch_size,
            cfg.virtual_epoch_size,
            self.pad,
            self.mixing,
            cfg.required_seq_len_multiple,
        )
        valid_sets = {}
        for i, d in enumerate(self.directions):
            ds = load_direction(data, "valid", d, self.dictionary, self.langs, required=False, **layout)
            if ds is not None:
                valid_sets[i] = ds
        missing = [d for i, d in enumerate(self.directions) if i not in valid_sets]
        if missing:
            _say(di, f"mt-train: no valid data for {','.join(missing)}: those directions are not validated")
        spm_model = self.spm_model = cfg.spm_model or _default_spm(data, cfg.finetune_from_model)
        if cfg.best_checkpoint_metric == "chrf" and not valid_sets:
            raise UserError("--best-checkpoint-metric chrf needs valid data: binarize a valid split")

        # model (same init on every rank: seeded before building; DDP also broadcasts rank 0's weights)
        _seed_all(cfg.seed)
        self.model_cfg, model, self.criterion = model_factory(cfg, self.dictionary, self.base_config)
        self.arch = cfg.arch or (f"the model of {self.start_path}" if self.base_config is not None else DEFAULT_ARCH)
        self.model = model.to(di.device)
        self.validator = Validator(
            valid_sets,
            self.dictionary,
            cfg.max_tokens,
            cfg.max_source_positions,
            cfg.max_target_positions,
            self.criterion,
            cfg.eval_chrf if di.is_master else 0,
            spm_model,
        )
        self.moe_group = moe_train.setup(self.model, di)  # expert parallelism: this rank's experts only
        if cfg.freeze_base:
            n_train, n_frozen = moe_train.freeze_base(self.model)
            _say(
                di,
                f"mt-train: --freeze-base: training {n_train / 1e6:.2f}M adapter parameters, "
                f"{n_frozen / 1e6:.1f}M frozen",
            )
        self.optimizer = build_optimizer(
            self.model.parameters(), cfg.lr, tuple(cfg.adam_betas), cfg.adam_eps, cfg.weight_decay
        )
        self.schedule = InverseSqrtSchedule(cfg.lr, cfg.warmup_updates, cfg.warmup_init_lr)
        self.monitor = stability.Monitor(
            self.model,
            cfg.log_interval,
            cfg.spike_threshold,
            cfg.spike_rollback,
            cfg.spike_skip,
            cfg.save_interval_updates,
            enabled=di.is_master,
            seed=cfg.seed,
        )
        self.amp = (lambda: torch.autocast(di.device.type, dtype=torch.bfloat16)) if cfg.bf16 else nullcontext
        # per-rank dropout streams (rank 0 included), set after the shared initialisation
        torch.manual_seed(cfg.seed * 1_000_003 + di.rank + 1)
        self.num_updates, self.data_state, self.best, self.wall_before = 0, DataState(), None, 0.0
        self.resumed_from: Path | None = None
        self.last_saved_update: int | None = None
        self._load()
        self.ddp = self.model
        if di.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [di.local_rank] if di.device.type == "cuda" else None
            moe_train.ddp_ignore_experts(self.model)  # each rank owns its experts: not all-reduced
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.workers, self.pool = self._start_workers()

    # --- checkpoints ---------------------------------------------------------------------------
    def _load(self) -> None:
        last = self.save_dir / ckpt.LAST
        shape = type(self.model_cfg).SHAPE_FIELDS
        rank, world = self.di.rank, self.di.world_size
        if not last.is_file():  # records of a run killed before its first checkpoint: nothing resumes them
            self.log.truncate_after(0)
        if last.is_file():
            state = ckpt.load_checkpoint(last, rank=rank, world=world)
            ckpt.check_compatible(
                state,
                last,
                self.model_cfg.to_dict(),
                self.dictionary.checksum(),
                shape + getattr(self.model_cfg, "ADAPTER_SHAPE_FIELDS", ()),
                self.directions,
            )
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.num_updates = int(state["num_updates"])
            self.data_state = DataState(**state["data_state"])
            self.best = state.get("best")
            self.monitor.load_state_dict(state.get("stability"))
            self.wall_before = float(state.get("wall_time", 0.0))
            rngs = state.get("rng", [])
            if self.di.rank < len(rngs):
                ckpt.restore_rng(rngs[self.di.rank])
            else:
                _say(
                    self.di, f"mt-train: {last} has no RNG state for rank {self.di.rank} (world size changed): reseeded"
                )
            self.resumed_from, self.last_saved_update = last, self.num_updates
            self.log.truncate_after(self.num_updates)
            _say(self.di, f"mt-train: resumed from {last} (update {self.num_updates}, epoch {self.data_state.epoch})")
            if self.cfg.finetune_from_model:
                _say(
                    self.di,
                    f"mt-train: {last} exists, so --finetune-from-model {self.cfg.finetune_from_model} is ignored",
                )
        elif self.cfg.finetune_from_model:  # fairseq's semantics: the weights only; optimizer, schedule, counters fresh
            path = Path(self.cfg.finetune_from_model)
            state = ckpt.load_checkpoint(path, rank=rank, world=world)
            start_cfg = {**self.model_cfg.to_dict(), "vocab_size": len(self.start_dictionary)}
            ckpt.check_compatible(state, path, start_cfg, self.start_dictionary.checksum(), shape)
            weights = self._add_lang_rows(state["model"]) if self.new_langs else state["model"]
            new = ckpt.load_weights(self.model, weights, path, new_ok=is_adapter_param)
            added = f"; added {', '.join(t for t, _ in self.new_langs)}" if self.new_langs else ""
            _say(
                self.di,
                f"mt-train: initialised weights from {path} (optimizer and data position start fresh)"
                + (f"; {len(new)} adapter tensors are new" if new else "")
                + added,
            )

    def _add_lang_rows(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The embedding grown by one row per ``--add-langs`` token (after every old row, see ``_run_dictionary``):
        the row of the language named after ``=``, else the mean of the model's language-token rows. The old
        rows are untouched, so old directions translate as before (the new tokens are banned from outputs)."""
        key = "embed_tokens.weight"
        emb = weights.get(key)
        if emb is None:
            raise UserError(f"--add-langs: {self.cfg.finetune_from_model} has no {key} to add rows to")
        d = self.start_dictionary
        lang_rows = [d.lang_index(c) for c in d.langs()]
        if not lang_rows and any(init is None for _, init in self.new_langs):
            raise UserError(
                f"--add-langs: {self.cfg.finetune_from_model} has no language tokens to initialise new rows "
                "from; name one: --add-langs xxx_Latn=eng_Latn"
            )
        rows = [
            emb[d.lang_index(init)] if init else emb[lang_rows].float().mean(0).to(emb.dtype)
            for _, init in self.new_langs
        ]
        return {**weights, key: torch.cat([emb, torch.stack(rows)])}

    def _state(self) -> dict[str, Any]:
        rngs = distributed.all_gather_object(ckpt.capture_rng())
        return {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "code_version": ckpt.code_version(),
            "model_config": self.model_cfg.to_dict(),
            "train_config": asdict(self.cfg),
            "resolved_paths": {
                k: str(Path(v).resolve()) if v else ""
                for k, v in (("data", self.cfg.data), ("spm_model", self.spm_model))
            },
            "dict_checksum": self.dictionary.checksum(),
            "dict_added": list(self.dict_added),  # tokens beyond the data's dict.txt (--add-langs)
            "lang_pairs": list(self.directions),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "num_updates": self.num_updates,
            "data_state": self.data_state.to_dict(),
            "best": self.best,
            "wall_time": self._wall(),
            "rng": rngs,
            "stability": self.monitor.state_dict(),
            "moe": moe_train.checkpoint_meta(self.model, self.optimizer, self.di.world_size),
        }

    def _save(self, last: bool, best: bool = False, epoch: int | None = None, snapshot: bool = True) -> None:
        """Collective (RNG states are gathered from every rank); rank 0 writes."""
        if not (last or best or epoch):
            return
        state = self._state()
        paths = []
        if epoch is not None and not self.cfg.no_epoch_checkpoints:
            paths.append(self.save_dir / ckpt.epoch_checkpoint_name(epoch))
        if last:
            paths.append(self.save_dir / ckpt.LAST)
        if best:
            paths.append(self.save_dir / ckpt.BEST)
        snapshot = self._snapshot_path(last, snapshot, epoch)
        if snapshot:
            paths.append(snapshot)
        if paths:  # every rank: expert-parallel runs write one expert shard per rank
            last_file = _file_id(self.save_dir / ckpt.LAST)
            try:
                ckpt.save_checkpoint(state, paths[0], paths[1:], rank=self.di.rank, world=self.di.world_size)
            except (OSError, RuntimeError) as exc:
                if isinstance(exc, RuntimeError) and not _TORCH_WRITE_FAILED.search(str(exc)):
                    raise
                raise UserError(self._save_failed(exc, last_file)) from None
            if last:
                self.last_saved_update = self.num_updates
        if epoch is not None and self.di.is_master:
            ckpt.prune_epoch_checkpoints(self.save_dir, self.cfg.keep_last_epochs)
        if snapshot and self.di.is_master:  # only as far back as --spike-rollback needs
            older = [p for _, p in ckpt.interval_checkpoints(self.save_dir)][: -self.monitor.keep_snapshots()]
            ckpt.remove_checkpoints(older)
        distributed.barrier()

    def _snapshot_path(self, last: bool, wanted: bool, epoch: int | None) -> Path | None:
        """The interval checkpoint ``checkpoint_{epoch}_{update}.pt`` kept for --spike-rollback, or None."""
        every = self.cfg.save_interval_updates
        if not (wanted and last and self.cfg.spike_rollback and every and self.num_updates % every == 0):
            return None
        return self.save_dir / ckpt.interval_checkpoint_name(epoch or self.data_state.epoch, self.num_updates)

    def _save_failed(self, exc: BaseException, last_file: tuple[int, int] | None) -> str:
        """One line for a checkpoint that could not be written: why, what is still there, how to go on."""
        full = not isinstance(exc, OSError) or exc.errno in (errno.ENOSPC, errno.EDQUOT)
        if isinstance(exc, OSError):
            why = exc.strerror or str(exc)
        else:  # torch's stream writer reports a short write ("unexpected pos ..."), usually a full disk
            why = f"the write failed ({str(exc).strip().splitlines()[0][:120]})"
        if full:
            with contextlib.suppress(OSError):
                why += f", {shutil.disk_usage(self.save_dir).free / 2**20:.0f} MiB free"
        last = self.save_dir / ckpt.LAST
        if _file_id(last) != last_file:  # written before a later copy (best, epoch) failed
            kept, then = f"{last} holds update {self.num_updates}", "resume"
        elif last_file is not None:
            at = self.last_saved_update if self.last_saved_update is not None else "?"
            kept, then = f"{last} from update {at} is intact", "resume from it"
        else:
            kept, then = "no checkpoint of this run was saved before", "start again"
        fix = "free space" if full else "fix that"
        return (
            f"could not save the checkpoint of update {self.num_updates} in {self.save_dir}/: {why}; {kept} "
            f"(no partial file is left): {fix} and run the same command to {then}"
        )

    def _wall(self) -> float:
        return self.wall_before + (time.perf_counter() - self.t_start)

    def _start_workers(self) -> tuple[int, ThreadPoolExecutor | None]:
        """``--cpu-workers``: the shard threads (``mt.common.threads.pick_workers``) and their intra-op threads."""
        cfg, di = self.cfg, self.di
        threads = torch.get_num_threads()
        on_cpu = di.device.type == "cpu"
        workers = pick_workers(cfg.cpu_workers, threads, on_cpu, di.distributed)
        if workers == 1:
            return 1, None
        if not on_cpu or di.distributed:
            raise UserError(
                f"--cpu-workers {workers}: shard threads are for CPU training in one process (under torchrun each "
                "rank already trains on its shard; on a GPU they would only queue); use --cpu-workers 1"
            )
        self.threads_before = threads  # restored when the run ends (an in-process caller keeps its setting)
        torch.set_num_threads(max(1, threads // workers))
        _say(di, f"mt-train: {workers} CPU workers x {torch.get_num_threads()} torch thread(s) (--cpu-workers)")
        return workers, ThreadPoolExecutor(workers, thread_name_prefix="mt-train-worker")

    # --- one update -----------------------------------------------------------------------------
    def _shard_step(self, rows: np.ndarray, weight: float, total_tokens: int, seed: int | None) -> dict[str, Any]:
        """Forward and backward of the sentences ``rows`` (a batch, or a worker's shard of one); their sums.

        ``seed``: a worker's generator seed (``mt.models.rng``); None draws from torch's default generator."""
        di = self.di
        batch = self.sampler.collate(rows).to(di.device)
        ctx = ForwardContext(src_lang=batch.src_lang, tgt_lang=batch.tgt_lang)
        if weight == 0.0:  # the dummy's tokens count as padding: MoE layers route none of them
            ctx.src_pad_mask = torch.ones_like(batch.src_tokens, dtype=torch.bool)
            ctx.tgt_pad_mask = torch.ones_like(batch.prev_output_tokens, dtype=torch.bool)
        mask = batch.target.ne(self.pad)
        with nullcontext() if seed is None else rng.worker_generator(seed):
            with self.amp():
                hidden = self.ddp(batch.src_tokens, batch.prev_output_tokens, ctx, target_mask=mask, features_only=True)
                out = self.criterion(hidden, self.model.output_weight, batch.target[mask], ctx.aux_losses)
            frac = batch.ntokens / total_tokens
            scale = di.world_size / total_tokens
            loss = (out.loss * scale + out.aux_total * (frac * di.world_size)) * weight
            loss.backward()
        return {
            "loss": float(out.loss.detach()) * weight,
            "nll": float(out.nll_loss) * weight,
            "aux": {name: float(v) * frac * weight for name, v in out.aux.items()},
            "stats": ctx.stats,
        }

    def _train_step(self, group: list[np.ndarray]) -> dict[str, Any]:
        """Forward/backward over the ``--update-freq`` global batches in ``group``, then one optimizer step."""
        di, model = self.di, self.ddp
        model.train()
        total_tokens = sum(int(self.sampler_tgt_tokens(rows)) for rows in group)
        loss_sum = torch.zeros((), dtype=torch.float64)
        nll_sum = torch.zeros((), dtype=torch.float64)
        aux_sums: dict[str, float] = {}
        mstats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # ForwardContext.stats over the update
        for k, rows in enumerate(group):
            local = shard_rows(rows, di.rank, di.world_size)
            weight = 1.0
            if len(local) == 0:  # more ranks than sentences: keep collectives matched, contribute nothing
                local, weight = rows[:1], 0.0
            sync = k == len(group) - 1 or not di.distributed
            with nullcontext() if sync else model.no_sync():
                if self.pool is None:
                    results = [self._shard_step(local, weight, total_tokens, None)]
                else:  # worker seeds drawn here, in shard order: the run stays reproducible
                    shards = [s for s in (shard_rows(local, i, self.workers) for i in range(self.workers)) if len(s)]
                    seeds = [rng.draw_seed() for _ in shards]
                    results = list(
                        self.pool.map(lambda s, seed: self._shard_step(s, weight, total_tokens, seed), shards, seeds)
                    )
            for res in results:
                for name, (tot, cnt) in res["stats"].items():
                    t0, c0 = mstats.get(name, (0.0, 0.0))
                    mstats[name] = (t0 + tot, c0 + cnt)
                loss_sum += res["loss"]
                nll_sum += res["nll"]
                for name, v in res["aux"].items():
                    aux_sums[name] = aux_sums.get(name, 0.0) + v
        lr = self.schedule.apply(self.optimizer, self.num_updates + 1)
        moe_train.finish_grads(self.model, di.world_size)
        gnorm = moe_train.clip_grad_norm_(
            self.model, self.cfg.clip_norm if self.cfg.clip_norm > 0 else float("inf"), self.moe_group
        )
        gnorm = float(gnorm)
        skipped = not math.isfinite(gnorm)
        if skipped:
            _say(di, f"mt-train: update {self.num_updates + 1}: gradient norm is {gnorm}; update skipped")
        else:
            self.optimizer.step()
            self.monitor.after_step(self.optimizer, self.num_updates + 1)
        self.optimizer.zero_grad(set_to_none=True)
        names = sorted(aux_sums)
        self.stop.poll()
        stats = torch.tensor(
            [float(loss_sum), float(nll_sum), float(self.stop.requested > 0)] + [aux_sums[n] for n in names],
            dtype=torch.float64,
        )
        packed = [
            torch.as_tensor(mstats[n][j], dtype=torch.float64).reshape(-1).cpu() for n in sorted(mstats) for j in (0, 1)
        ]
        stats = distributed.all_reduce_sum(torch.cat([stats, *packed]).to(di.device)).cpu()
        off, reduced = 3 + len(names), {}
        for i, n in enumerate(sorted(mstats)):  # (sum, count) pairs of the model's logged statistics
            a, b = packed[2 * i].numel(), packed[2 * i + 1].numel()
            reduced[n] = (stats[off : off + a].numpy(), stats[off + a : off + a + b].numpy())
            off += a + b
        stats = stats.tolist()
        return {
            "loss_sum": stats[0],
            "nll_sum": stats[1],
            "ntokens": total_tokens,
            "nsentences": sum(len(r) for r in group),
            "stop": stats[2] > 0,
            "lr": lr,
            "gnorm": gnorm,
            "aux": {n: stats[3 + i] for i, n in enumerate(names)},
            "mstats": reduced,
        }

    def sampler_tgt_tokens(self, rows: np.ndarray) -> int:
        return int(sum(int(self.sampler.datasets[d].tgt_sizes[i]) for d, i in rows.tolist()))

    # --- validation -----------------------------------------------------------------------------
    def _validate(self) -> tuple[dict[str, Any] | None, bool]:
        """Validate; returns (record, improved). Collective."""
        v = self.validator
        if not v.datasets:
            return None, False
        with local_experts(self.model):  # expert parallelism: validate with all experts on every rank
            per_dir = v.losses(self.model, self.di.device, self.di.rank, self.di.world_size, self.cfg.bf16)
            chrf: dict[str, float] = {}
            if self.cfg.eval_chrf > 0:
                if self.di.is_master:
                    chrf = v.chrf(self.model, self.di.device)
                chrf = distributed.broadcast_object(chrf)
        for name, c in chrf.items():
            per_dir.setdefault(name, {})["chrf"] = c
        ntok = sum(r.get("ntokens", 0) for r in per_dir.values())
        rec: dict[str, Any] = {"type": "valid", "update": self.num_updates, "epoch": self.data_state.epoch}
        if ntok:
            rec["loss"] = sum(r["loss"] * r["ntokens"] for r in per_dir.values() if "ntokens" in r) / ntok
            rec["nll_loss"] = sum(r["nll_loss"] * r["ntokens"] for r in per_dir.values() if "ntokens" in r) / ntok
            rec["ppl"] = 2 ** rec["nll_loss"]
        if chrf:
            rec["chrf"] = sum(chrf.values()) / len(chrf)
        metric = rec.get("chrf" if self.cfg.best_checkpoint_metric == "chrf" else "loss")
        improved = False
        if metric is not None:
            higher = self.cfg.best_checkpoint_metric == "chrf"
            if self.best is None or (metric > self.best["value"] if higher else metric < self.best["value"]):
                self.best = {"metric": self.cfg.best_checkpoint_metric, "value": metric, "update": self.num_updates}
                improved = True
        rec["best"] = self.best["value"] if self.best else None
        rec["wall"] = self._wall()
        rec["directions"] = per_dir
        self.log.write(rec)
        if self.di.is_master:
            dirs = "  ".join(
                f"{k}: loss {r.get('loss', float('nan')):.3f}" + (f" chrF++ {r['chrf']:.1f}" if "chrf" in r else "")
                for k, r in per_dir.items()
            )
            tail = f" chrF++ {rec['chrf']:.2f}" if "chrf" in rec else ""
            self._write(f"valid | update {self.num_updates} | loss {rec.get('loss', float('nan')):.3f}{tail} | {dirs}")
        return rec, improved

    def _write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr, flush=True)

    # --- main loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg, di = self.cfg, self.di
        self.t_start = time.perf_counter()
        self.bar = None
        self.save_dir.mkdir(parents=True, exist_ok=True)
        _say(
            di,
            f"mt-train: checkpoints in {self.save_dir}/ "
            "(checkpoint_last.pt, checkpoint_best.pt, checkpoint<epoch>.pt), "
            f"log in {self.log.path}",
        )
        _say(
            di,
            f"mt-train: {self.arch}: {num_parameters(self.model) / 1e6:.1f}M parameters "
            f"on {di.world_size} x {di.device.type}"
            f"{' (bf16 autocast)' if cfg.bf16 else ''}; {len(self.directions)} directions",
        )
        if cfg.bf16 and (slow := bf16_warning(di.device.type)):
            _say(di, f"WARNING: {slow}")
        if getattr(self.model_cfg, "moe_freq", 0):
            m = self.model_cfg
            per_rank = (
                f"; expert parallel: {m.moe_expert_count // di.world_size} experts per rank" if self.moe_group else ""
            )
            _say(
                di,
                f"mt-train: sparse MoE: {moe_train.num_moe_layers(m)} MoE layers x {m.moe_expert_count} experts, top-2"
                f"{', CMR' if m.moe_cmr else ''}{f', EOM {m.moe_eom}' if m.moe_eom else ''}{per_rank}",
            )
        for line in mixing.describe_lines(self.mixing, self.sampler, self.num_updates):
            _say(di, line)
        if self._finished():
            _say(
                di,
                f"mt-train: training already finished at update {self.num_updates} / epoch {self.data_state.epoch - 1} "
                f"({self.save_dir / ckpt.LAST}); raise --max-update / --max-epoch to continue",
            )
            return self._summary()
        if cfg.max_update == 0 and cfg.max_epoch == 0:
            _say(di, "mt-train: no --max-update or --max-epoch: training runs until stopped (Ctrl-C saves and exits)")
        self.log.write(
            {
                "type": "start",
                "update": self.num_updates,
                "epoch": self.data_state.epoch,
                "world_size": di.world_size,
                "device": di.device.type,
                "params": num_parameters(self.model),
                "arch": self.arch,
                "bf16": cfg.bf16,
                "model_config": self.model_cfg.to_dict(),
                "lang_pairs": self.directions,
                "code_version": ckpt.code_version(),
                "resumed_from": str(self.resumed_from) if self.resumed_from else None,
                "data_state": self.data_state.to_dict(),
            }
        )
        mix = self.mixing.record(self.sampler.active(self.num_updates))  # probabilities and planned epochs
        self.log.write({"type": "mixing", "update": self.num_updates, **mix})

        plan, plan_active = None, None
        window = {"loss": 0.0, "nll": 0.0, "ntok": 0, "nsent": 0, "t": time.perf_counter(), "aux": {}, "n": 0}
        stopped_by_signal = False
        try:
            while not self._finished():
                ds = self.data_state
                if plan is None:
                    n = self.sampler.epoch_size(ds.plan_start_update) - ds.consumed_before_plan
                    plan = self.sampler.plan(ds.epoch, ds.plan_start_update, n)
                    plan_active = self.sampler.active(ds.plan_start_update)
                    self._new_bar(plan)
                active = self.sampler.active(self.num_updates)
                if active != plan_active:  # curriculum: pairs join -> re-plan the rest of this epoch
                    consumed = ds.consumed_before_plan + sum(len(b) for b in plan[: ds.position])
                    self.data_state = DataState(ds.epoch, self.num_updates, consumed, 0)
                    names = [self.directions[i] for i in active]
                    self.log.write(
                        {"type": "curriculum", "update": self.num_updates, "epoch": ds.epoch, "active": names}
                    )
                    self._write(f"curriculum | update {self.num_updates} | active: {','.join(names)}")
                    plan = None
                    continue
                if ds.position >= len(plan):  # an epoch with nothing left to draw
                    self._end_epoch()
                    plan = None
                    continue

                if self.monitor.skip_left:  # after a spike rollback: --spike-skip batches are passed over unseen
                    ds.position += self.monitor.take_skip(len(plan) - ds.position)
                    if ds.position >= len(plan):
                        self._end_epoch()
                        plan = None
                    continue
                group = plan[ds.position : ds.position + cfg.update_freq]
                st = self._train_step(group)
                ds.position += len(group)
                self.num_updates += 1
                self._accumulate(window, st)
                if self.bar is not None:
                    self.bar.update(1)
                    self.bar.set_postfix(
                        loss=f"{st['loss_sum'] / max(st['ntokens'], 1) / LN2:.3f}",
                        tok_s=f"{window['ntok'] / max(time.perf_counter() - window['t'], 1e-9):.0f}",
                        lr=f"{st['lr']:.2e}",
                        refresh=False,
                    )
                if self.num_updates % cfg.log_interval == 0:
                    self._log_train(window, st)
                if self._spike(st):  # rolled back (--spike-rollback): continue from the restored position
                    plan = None
                    window.update(loss=0.0, nll=0.0, ntok=0, nsent=0, t=time.perf_counter(), aux={}, n=0)
                    continue
                stopped_by_signal = st["stop"]
                epoch_end = ds.position >= len(plan)
                done = (cfg.max_update and self.num_updates >= cfg.max_update) or stopped_by_signal
                validate = (
                    (cfg.validate_interval_updates and self.num_updates % cfg.validate_interval_updates == 0)
                    or (epoch_end and ds.epoch % cfg.validate_interval == 0)
                    or (done and not stopped_by_signal)
                )
                improved = self._validate()[1] if validate else False
                if epoch_end:
                    self._end_epoch(improved_already=improved)
                    plan = None
                else:
                    save_last = bool(done) or (
                        cfg.save_interval_updates and self.num_updates % cfg.save_interval_updates == 0
                    )
                    self._save(last=bool(save_last), best=improved)
                if stopped_by_signal:
                    break
        finally:
            if self.bar is not None:
                self.bar.close()
            if self.pool is not None:
                self.pool.shutdown()
                torch.set_num_threads(self.threads_before)
        if stopped_by_signal:
            _say(di, f"mt-train: stopped at update {self.num_updates}; run the same command to resume")
            return self._summary(stopped=True)
        seen = mixing.seen_record(self.mixing, self.sampler, self.data_state)  # epochs each direction really saw
        if seen:
            self.log.write({"type": "mixing_seen", "update": self.num_updates, **seen})
        best = (
            f"best {self.best['metric']} {self.best['value']:.4f} at update {self.best['update']}"
            if self.best
            else "no validation"
        )
        _say(di, f"mt-train: done at update {self.num_updates}; {best}; checkpoints in {self.save_dir}/")
        return self._summary()

    def _spike(self, st: dict[str, Any]) -> bool:
        """Check this update's loss; warn about a spike, and roll back when --spike-rollback says so."""
        spike = self.monitor.check(self.num_updates, st["loss_sum"] / max(st["ntokens"], 1) / LN2)
        if spike is None:
            return False
        if self.monitor.should_warn(self.num_updates):
            self._say_master("mt-train: " + stability.spike_warning(spike, self.cfg.spike_threshold))
        if not self.monitor.wants_rollback(self.num_updates):
            self.log.write({"type": "spike", "update": spike["update"], "spike": spike})
            return False
        path = self.monitor.snapshot_for(self.save_dir, self.num_updates)
        if path is None:
            self._say_master(
                f"mt-train: no checkpoint from {self.cfg.spike_rollback} updates before update "
                f"{self.num_updates} to roll back to yet: continuing"
            )
            self.log.write({"type": "spike", "update": spike["update"], "spike": spike})
            return False
        self._rollback(path, spike)
        return True

    def _rollback(self, path: Path, spike: dict[str, Any]) -> None:
        """Back to ``path`` (weights, Adam, data position, RNG, loss history); skip --spike-skip batches next."""
        state = ckpt.load_checkpoint(path, rank=self.di.rank, world=self.di.world_size)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates, self.data_state = int(state["num_updates"]), DataState(**state["data_state"])
        self.best = state.get("best")
        rngs = state.get("rng", [])
        if self.di.rank < len(rngs):
            ckpt.restore_rng(rngs[self.di.rank])
        self.monitor.rolled_back(state.get("stability"), spike["update"])
        if self.di.is_master:
            ckpt.remove_checkpoints([p for u, p in ckpt.interval_checkpoints(self.save_dir) if u > self.num_updates])
        rec = {
            "type": "rollback",
            "update": self.num_updates,
            "spike": spike,
            "from": str(path),
            "skip": self.cfg.spike_skip,
        }
        stability.move_abandoned_records(self.log, self.num_updates, rec)  # the abandoned updates' records go into rec
        self._say_master(
            f"mt-train: rolled back to update {self.num_updates} ({path.name}); skipping the next "
            f"{self.cfg.spike_skip} batches"
        )
        self._save(last=True, snapshot=False)  # a kill from here on resumes after the rollback

    def _say_master(self, msg: str) -> None:
        if self.di.is_master:
            self._write(msg)

    def _end_epoch(self, improved_already: bool = False) -> None:
        """The epoch just ran out: advance the data position, validate if not yet done, save checkpoints."""
        epoch = self.data_state.epoch
        self.data_state = DataState(epoch + 1, plan_start_update=self.num_updates)
        self._save(last=True, best=improved_already, epoch=epoch)

    def _finished(self) -> bool:
        cfg = self.cfg
        if cfg.max_update and self.num_updates >= cfg.max_update:
            return True
        return bool(cfg.max_epoch and self.data_state.epoch > cfg.max_epoch)

    def _new_bar(self, plan: list[np.ndarray]) -> None:
        if not self.di.is_master or self.cfg.no_progress_bar:
            return
        from tqdm import tqdm

        if self.bar is not None:
            self.bar.close()
        remaining = math.ceil((len(plan) - self.data_state.position) / self.cfg.update_freq)
        self.bar = tqdm(
            total=remaining,
            desc=f"epoch {self.data_state.epoch:03d}",
            unit="upd",
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )

    def _accumulate(self, w: dict[str, Any], st: dict[str, Any]) -> None:
        w["loss"] += st["loss_sum"]
        w["nll"] += st["nll_sum"]
        w["ntok"] += st["ntokens"]
        w["nsent"] += st["nsentences"]
        w["n"] += 1
        for k, v in st["aux"].items():
            w["aux"][k] = w["aux"].get(k, 0.0) + v
        ms = w.setdefault("mstats", {})
        for k, (tot, cnt) in st.get("mstats", {}).items():
            t0, c0 = ms.get(k, (0.0, 0.0))
            ms[k] = (t0 + tot, c0 + cnt)

    def _log_train(self, w: dict[str, Any], st: dict[str, Any]) -> None:
        now = time.perf_counter()
        dt = max(now - w["t"], 1e-9)
        nll = w["nll"] / max(w["ntok"], 1) / LN2
        rec = {
            "type": "train",
            "update": self.num_updates,
            "epoch": self.data_state.epoch,
            "loss": w["loss"] / max(w["ntok"], 1) / LN2,
            "nll_loss": nll,
            "ppl": 2**nll,
            "lr": st["lr"],
            "gnorm": st["gnorm"],
            "tokens_per_s": w["ntok"] / dt,
            "sentences_per_s": w["nsent"] / dt,
            "ntokens": w["ntok"],
            "wall": self._wall(),
            "aux": {k: v / w["n"] for k, v in w["aux"].items()},
        }
        if w.get("mstats"):
            rec["moe"] = _stat_values(w.pop("mstats"), self.langs)
        rec.update(self.monitor.take())  # per-parameter-group Adam statistics of this update
        self.log.write(rec)
        if self.bar is None and self.di.is_master:
            aux = "".join(f" | {k} {v:.4f}" for k, v in rec["aux"].items())
            print(
                f"train | epoch {rec['epoch']:03d} | update {rec['update']} | loss {rec['loss']:.3f} | nll {nll:.3f} | "
                f"ppl {rec['ppl']:.2f} | lr {rec['lr']:.3e} | gnorm {rec['gnorm']:.3f} | "
                f"{rec['tokens_per_s']:.0f} tok/s{aux}",
                file=sys.stderr,
                flush=True,
            )
        w.update({"loss": 0.0, "nll": 0.0, "ntok": 0, "nsent": 0, "t": now, "aux": {}, "n": 0})

    def _summary(self, stopped: bool = False) -> dict[str, Any]:
        return {
            "num_updates": self.num_updates,
            "epoch": self.data_state.epoch,
            "best": self.best,
            "stopped": stopped,
            "save_dir": str(self.save_dir),
            "log": str(self.log.path),
        }


def _stat_values(mstats: dict[str, tuple[np.ndarray, np.ndarray]], langs: list[str]) -> dict[str, Any]:
    """(sum, count) pairs -> logged means: a number, a list (per expert), or {language: mean}."""
    out: dict[str, Any] = {}
    for name, (tot, cnt) in sorted(mstats.items()):
        tot, cnt = np.asarray(tot, dtype=np.float64).reshape(-1), np.asarray(cnt, dtype=np.float64).reshape(-1)
        val = tot / np.maximum(cnt, 1e-12)
        if name.endswith(("@src_lang", "@tgt_lang")):
            out[name] = {langs[i]: float(val[i]) for i in range(min(len(langs), len(val))) if cnt[i] > 0}
        else:
            out[name] = float(val[0]) if val.size == 1 else [float(v) for v in val]
    return out


# torch.save's own report of a short write (a full disk under a file object): "unexpected pos 704 vs 598",
# "PytorchStreamWriter failed writing file ...: file write failed"
_TORCH_WRITE_FAILED = re.compile(r"unexpected pos|PytorchStreamWriter failed|file write failed|iostream error")


def _file_id(path: Path) -> tuple[int, int] | None:
    """(inode, mtime): changes when an atomic write replaces the file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
