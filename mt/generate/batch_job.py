"""``mt-translate``: translate corpora of any size as a resumable, shardable batch job.

Inputs (``mt.generate.readers``: text / TSV / JSONL / Parquet files or directories) are read as one stream
of records, cut into chunks of ``--chunk-size`` records. Chunk ``k`` belongs to shard ``k % N`` of
``--shard i/N``, so N jobs (a Slurm array) split a corpus deterministically, each reading the stream and
translating only its chunks. Within a chunk sentences are batched by length (``--max-tokens``) and put
back in order. Layout of ``--out DIR``::

    job.json                          what the job is: inputs by content (``mt.common.files.file_identity``), the
                                      model by the id its checkpoint got when saved, options; a re-run with
                                      another model, changed inputs or other settings is refused instead of
                                      mixing outputs (finished chunks are never deleted)
    chunks/{tgt}/chunk-{k:06d}.txt    translations of chunk k, one line per record; written to a temp name
                                      and renamed, so it exists only complete; it is the "done" marker
    chunks/bad-{k:06d}.tsv            bad records of chunk k: file, line, reason
    chunks/index.json                 records per input file and the number of chunks
    {tgt}/{input name}                merged output per input file, line-aligned with it (a non-text
                                      input gets ``.txt`` appended, a ``.gz`` text input loses ``.gz``)
    bad_lines.tsv                     every bad record: file, line, reason

A killed job loses at most the chunks in flight; the re-run skips finished chunks. The merge runs when
every chunk of every target exists (in a sharded job: whichever shard finishes last), so outputs appear
only when complete, in input order, and always with as many lines as the input has records.

Bad records are never dropped: empty lines, invalid UTF-8, missing columns / fields, and sources longer
than ``--max-source-positions`` tokens (the model's limit by default) get an empty translation
(``--bad-lines copy``: the source text itself where it is valid text) and a row in ``bad_lines.tsv``.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Iterator

from mt.common.errors import UserError
from mt.common.files import atomic_write, exclusive_lock, file_identity, refuse_file_in_the_way
from mt.common.flags import arg
from mt.common.langs import check_code
from mt.formats import checkpoint as ckpt
from mt.generate.moe_inference import MoEInferenceConfig, world_size
from mt.generate.readers import InputFile, Record, count_records, iter_records, list_inputs
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator

JOB_VERSION = 2  # 2: inputs by content, the model by its save id (1: paths and byte sizes only)


@dataclass
class TranslateConfig:
    inputs: list[str] = arg(
        [], "files or directories (read recursively, sorted)", positional=True, nargs="+", metavar="INPUT", type=str
    )
    out: str = arg("", "output directory (chunks, merged outputs, bad_lines.tsv)", required=True)
    path: str = ""
    src_lang: str = arg("", name="--source-lang", short="-s", required=True)
    tgt_langs: list[str] = arg(
        [], "one or more target languages, comma-separated", name="--target-lang", short="-t", required=True
    )
    data: str = ""
    spm_model: str = ""
    fmt: str = arg(
        "auto",
        "input format (default: by extension: .tsv, .jsonl, .parquet, else text)",
        name="--format",
        choices=["auto", "text", "tsv", "jsonl", "parquet"],
        show_default=False,
    )
    column: str | None = arg(None, "TSV: 1-based field number; Parquet: column name")
    json_field: str | None = arg(None, "JSONL: key of the text", name="--field")
    chunk_size: int = arg(10000, "records per chunk, the unit of resume and sharding")
    shard_index: int = 0
    num_shards: int = 1
    search: SearchConfig = field(default_factory=SearchConfig)
    max_tokens: int = 4096
    batch_size: int = 0
    max_source_positions: int = arg(0, "longer sources are bad lines (default: the model's limit)")
    bad_lines: str = arg("empty", "output for bad records", choices=["empty", "copy"])
    device: str = "cpu"
    bf16: bool = False
    quantize: str = "none"
    threads: int = 0
    progress: bool = True
    merge: bool = True
    moe: MoEInferenceConfig = field(default_factory=MoEInferenceConfig)

    def check(self) -> "TranslateConfig":
        if not self.inputs:
            raise UserError("give at least one input file or directory")
        if not self.out:
            raise UserError("--out DIR is required (chunks and outputs go there)")
        check_code(self.src_lang, "-s/--source-lang")
        if not self.tgt_langs:
            raise UserError("-t/--target-lang is required (comma-separated for several: -t fra_Latn,deu_Latn)")
        for t in self.tgt_langs:
            check_code(t, "-t/--target-lang")
        if len(set(self.tgt_langs)) != len(self.tgt_langs):
            raise UserError(f"-t {','.join(self.tgt_langs)}: a target language is repeated")
        if self.chunk_size < 1:
            raise UserError(f"--chunk-size must be at least 1, got {self.chunk_size}")
        if not 0 <= self.shard_index < self.num_shards:
            raise UserError(f"--shard {self.shard_index}/{self.num_shards}: expected i/N with 0 <= i < N")
        if self.bad_lines not in ("empty", "copy"):
            raise UserError(f"--bad-lines {self.bad_lines!r}: choose empty or copy")
        self.search.check()
        self.moe.check()
        if world_size() > 1:
            raise UserError(
                "mt-translate shards with --shard i/N, not torchrun; expert-parallel inference (torchrun) "
                "is for mt-generate and the Translator API"
            )
        return self


def parse_shard(text: str) -> tuple[int, int]:
    """``"3/8"`` -> (3, 8); shards are 0-based like ``$SLURM_ARRAY_TASK_ID``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(
            f"--shard {text!r}: expected i/N such as 0/4 (0-based shard index / number of shards)"
        ) from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text}: expected 0 <= i < N")
    return i, n


def chunk_path(out: Path, tgt: str, k: int) -> Path:
    return out / "chunks" / tgt / f"chunk-{k:06d}.txt"


def bad_path(out: Path, k: int) -> Path:
    return out / "chunks" / f"bad-{k:06d}.tsv"


def output_name(f: InputFile) -> str:
    """Merged output name for an input: text keeps its name (minus ``.gz``), others get ``.txt`` added."""
    rel = f.rel[:-3] if f.rel.endswith(".gz") else f.rel
    return rel if f.fmt == "text" else rel + ".txt"


def check_output_names(files: list[InputFile]) -> None:
    """Refuse, before any work, inputs whose outputs would overwrite each other (``a.txt`` and ``a.txt.gz``)
    or where one output would have to be a folder of another (a file ``sub`` and a directory's ``sub/b.txt``)."""
    owner: dict[str, InputFile] = {}
    for f in files:
        name = output_name(f)
        if name in owner:
            raise UserError(
                f"inputs {owner[name].path} and {f.path} would both be written to OUT/{{tgt}}/{name}: "
                "rename one, or translate them with separate --out folders"
            )
        owner[name] = f
    for name, f in owner.items():
        parents = [p.as_posix() for p in Path(name).parents if p.as_posix() != "."]
        clash = next((owner[p] for p in parents if p in owner), None)
        if clash is not None:
            raise UserError(
                f"inputs {clash.path} and {f.path} clash: the output of one, OUT/{{tgt}}/"
                f"{output_name(clash)}, would have to be a folder for the other's, OUT/{{tgt}}/{name}; "
                "rename one"
            )


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


# --- the job description (job.json) ------------------------------------------------------------------
def _job(cfg: TranslateConfig, files: list[InputFile], max_src: int, model: dict) -> dict:
    job = {
        "version": JOB_VERSION,
        "inputs": [
            {"name": f.rel, "format": f.fmt, "path": str(f.path.resolve()), "identity": file_identity(f.path)}
            for f in files
        ],
        "column": cfg.column,
        "field": cfg.json_field,
        "chunk_size": cfg.chunk_size,
        "source_lang": cfg.src_lang,
        "model": model,
        "search": asdict(cfg.search),
        "bf16": cfg.bf16,
        "max_source_positions": max_src,
        "bad_lines": cfg.bad_lines,
    }
    if cfg.moe.moe_gating == "static":  # may drop tokens over capacity: other outputs (cache settings do not matter)
        job["moe_static_gating"] = {"eval_capacity_token_fraction": cfg.moe.moe_eval_capacity_token_fraction}
    return job


def _model(cfg: TranslateConfig, tr: Translator | None) -> dict:
    """The model of the job: its checkpoint's save id (``mt.formats.checkpoint.model_id``) and, for the record,
    its path."""
    if tr is not None:
        return {"id": ckpt.model_id(tr.loaded.path, tr.loaded.meta), "path": str(Path(tr.loaded.path).resolve())}
    return {"id": ckpt.model_id(cfg.path), "path": str(Path(cfg.path).resolve())}


def _short(model_id: object) -> str:
    text = str(model_id)
    kind, _, value = text.partition(":")
    return f"{kind} {value[:12]}" if value else text


def _finished_chunks(out: Path) -> int:
    return sum(1 for _ in (out / "chunks").glob("*/chunk-*.txt")) if (out / "chunks").is_dir() else 0


def _check_job(out: Path, job: dict) -> None:
    """Refuse a job whose finished chunks came from another model, other inputs or other settings; else record it."""
    path = out / "job.json"
    redo = f"use a new --out, or delete {out / 'chunks'} and {path} to start over"
    if not path.is_file():
        done = _finished_chunks(out)
        if done:
            raise UserError(
                f"{out / 'chunks'}: {done} finished chunks but no {path} that says which model and inputs "
                f"made them; {redo}"
            )
        with exclusive_lock(path, f"{path}", wait=True):  # shards starting together: one writes, the others compare
            if not path.is_file():
                with atomic_write(path) as fh:
                    json.dump(job, fh, indent=1, ensure_ascii=False)
                    fh.write("\n")
                return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        old = None
    if not isinstance(old, dict):
        raise UserError(f"{path}: unreadable job description; {redo}")
    if old.get("version") != JOB_VERSION:
        raise UserError(
            f"{path}: written by an older mt-translate (job version {old.get('version')}) that told models "
            f"and inputs apart by byte size only, so its chunks cannot be checked; {redo}"
        )
    was, now = old.get("model") or {}, job["model"]
    if was.get("id") != now["id"]:
        raise UserError(
            f"{path}: this job was started with another model ({was.get('path')}, {_short(was.get('id'))}; "
            f"now {now['path']}, {_short(now['id'])}): its finished chunks are the old model's "
            f"translations; {redo}"
        )
    changed = _input_change(old.get("inputs"), job["inputs"])
    if changed:
        raise UserError(f"{path}: {changed}, so the finished chunks do not match; {redo}")
    diffs = [k for k in job if k not in ("model", "inputs") and old.get(k) != job[k]]
    if diffs:
        raise UserError(
            f"{out} holds a job with other settings ({', '.join(diffs)} differ): its chunks would not match; {redo}"
        )


def _input_change(old: object, new: list[dict]) -> str:
    """How the inputs differ from those of the job ("" when they do not)."""
    old = [i for i in old if isinstance(i, dict)] if isinstance(old, list) else []
    if [(i.get("name"), i.get("format")) for i in old] != [(i["name"], i["format"]) for i in new]:
        names = [str(i.get("name")) for i in old]
        return f"the inputs differ (job: {', '.join(names)}; now: {', '.join(i['name'] for i in new)})"
    for a, b in zip(old, new):
        if a.get("identity") != b["identity"]:
            size_a, size_b = (a.get("identity") or {}).get("size"), b["identity"]["size"]
            return f"input {b['name']} changed since the job started ({size_a} -> {size_b} bytes, other content)"
    return ""


# --- the job -------------------------------------------------------------------------------------------
class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="sent", desc=desc, disable=not enabled, file=sys.stderr, smoothing=0.1)

    def update(self, n: int) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def _chunks(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(islice(records, size)):
        yield chunk


def translate_job(cfg: TranslateConfig, translator: Translator | None = None) -> dict:
    """Run (or resume) this shard of the job; merge when the whole job is done. Returns a summary."""
    cfg.check()
    out = Path(cfg.out)
    refuse_file_in_the_way(out, "--out", folder=True)
    files = list_inputs(cfg.inputs, cfg.fmt, exclude=out)
    check_output_names(files)
    counts = [count_records(f, cfg.column) for f in files]
    n_records = sum(counts)
    n_chunks = math.ceil(n_records / cfg.chunk_size)
    chunk_len = [min(cfg.chunk_size, n_records - k * cfg.chunk_size) for k in range(n_chunks)]
    mine = [k for k in range(n_chunks) if k % cfg.num_shards == cfg.shard_index]
    todo = {k: [t for t in cfg.tgt_langs if not chunk_path(out, t, k).is_file()] for k in mine}
    work = sum(chunk_len[k] * len(todo[k]) for k in mine)

    tr = translator
    max_src = cfg.max_source_positions
    if tr is None and (work > 0 or not max_src):
        tr = Translator.from_options(cfg)
    if tr is not None:
        for t in [cfg.src_lang, *cfg.tgt_langs]:
            tr.lang_token(t)  # a clear error for a language the model does not know
        max_src = max_src or tr.max_source_positions
    _check_job(out, _job(cfg, files, max_src, _model(cfg, tr)))

    _remove_stale_temps(out, cfg)
    shard = f" shard {cfg.shard_index}/{cfg.num_shards}" if cfg.num_shards > 1 else ""
    skipped = sum(1 for k in mine if not todo[k])
    if skipped:
        _say(f"mt-translate:{shard} {skipped} of {len(mine)} chunks already done in {out}/chunks, skipped")
    bar = _Progress(work, cfg.progress and work > 0, f"mt-translate{shard}")
    untrained = tr.untrained([(cfg.src_lang, t) for t in cfg.tgt_langs])
    if untrained:  # said once for the job (translate_ids would say it per chunk; long sources are bad records here)
        _say(
            f"mt-translate: warning: {', '.join(untrained)}: {tr.loaded.path.name} was not trained on this direction "
            f"(it was trained on {', '.join(tr.lang_pairs)}): expect poor zero-shot translations"
        )
    t0, done_sent, n_bad = time.perf_counter(), 0, 0
    seen = 0
    try:  # the bar ends its line even on an error, so the error message gets a line of its own
        for k, recs in enumerate(_chunks(iter_records(files, cfg.column, cfg.json_field), cfg.chunk_size)):
            seen += len(recs)
            if k >= n_chunks or len(recs) != chunk_len[k]:
                raise UserError(f"{files[recs[0].file].path}: input changed while the job was reading it; start again")
            if k % cfg.num_shards != cfg.shard_index or not todo[k]:
                continue
            n_bad += _run_chunk(tr, cfg, out, files, k, recs, todo[k], bar)
            done_sent += len(recs) * len(todo[k])
    finally:
        bar.close()
    if seen != n_records:
        raise UserError(f"{cfg.inputs[0]}: input changed while the job was reading it; start again")
    secs = time.perf_counter() - t0
    if work:
        _say(
            f"mt-translate:{shard} translated {done_sent} sentences in {secs:.1f}s "
            f"({done_sent / max(secs, 1e-9):.1f} sentences/s); {n_bad} bad records in these chunks"
        )
        if tr is not None and tr.moe is not None:
            _say(f"mt-translate:{shard} {tr.moe_summary()}")
    index = {
        "records": n_records,
        "chunks": n_chunks,
        "chunk_size": cfg.chunk_size,
        "files": [{"name": f.rel, "output": output_name(f), "records": c} for f, c in zip(files, counts)],
    }
    with atomic_write(out / "chunks" / "index.json") as fh:
        json.dump(index, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    summary = {"records": n_records, "chunks": n_chunks, "translated": done_sent, "seconds": secs, "merged": []}
    if cfg.merge:
        missing = [(t, k) for t in cfg.tgt_langs for k in range(n_chunks) if not chunk_path(out, t, k).is_file()]
        if missing:
            _say(
                f"mt-translate:{shard} done; {len(missing)} chunks of other shards are not finished yet: the last "
                "shard to finish writes the merged outputs"
            )
        else:
            summary["merged"] = merge(out, cfg.tgt_langs, files, index)
    return summary


_TEMP = re.compile(r"^\.(?:chunk|bad)-(\d+)\.(?:txt|tsv)\..*\.tmp$")


def _remove_stale_temps(out: Path, cfg: TranslateConfig) -> None:
    """Temp files a killed run left behind, for this shard's chunks only (other shards may be writing)."""
    for folder in [out / "chunks", *(out / "chunks" / t for t in cfg.tgt_langs)]:
        if folder.is_dir():
            for p in folder.iterdir():
                m = _TEMP.match(p.name)
                if m and int(m.group(1)) % cfg.num_shards == cfg.shard_index:
                    p.unlink(missing_ok=True)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _run_chunk(tr, cfg, out, files, k, recs, targets, bar) -> int:
    """Translate chunk ``k`` into every target of ``targets``; returns its number of bad records."""
    reasons = [r.reason if r.text is None else ("" if r.text.strip() else "empty") for r in recs]
    good = [j for j, why in enumerate(reasons) if not why]
    ids = tr.encode([recs[j].text for j in good]) if good else []
    max_src = cfg.max_source_positions or tr.max_source_positions
    keep, keep_ids = [], []
    for j, x in zip(good, ids):
        n = tr.source_length(x)
        if n > max_src:
            reasons[j] = f"too-long ({n} tokens > {max_src})"
        else:
            keep.append(j)
            keep_ids.append(x)
    bad = [(files[recs[j].file].rel, recs[j].line, why) for j, why in enumerate(reasons) if why]
    with atomic_write(bad_path(out, k)) as fh:
        fh.writelines(f"{name}\t{line}\t{why}\n" for name, line, why in bad)
    search = replace(cfg.search, seed=cfg.search.seed + k)  # sampling reproduces chunk by chunk on resume
    for tgt in targets:
        lines = [(_one_line(recs[j].text or "") if cfg.bad_lines == "copy" else "") for j in range(len(recs))]
        if keep_ids:

            def on_batch(idx, hyps):
                bar.update(len(idx))

            hyps = tr.translate_ids(
                keep_ids, cfg.src_lang, tgt, search, cfg.max_tokens, cfg.batch_size, on_batch, warn=lambda m: None
            )  # said once for the job, above
            for j, h in zip(keep, hyps):
                lines[j] = _one_line(tr.detokenize(h[0].tokens))
        bar.update(len(recs) - len(keep_ids))
        with atomic_write(chunk_path(out, tgt, k)) as fh:
            fh.writelines(line + "\n" for line in lines)
    return len(bad)


def merge(out: Path, targets: list[str], files: list[InputFile], index: dict) -> list[Path]:
    """Write ``{out}/{tgt}/{input name}`` from the chunks, and ``{out}/bad_lines.tsv``."""
    written = []
    n_chunks = index["chunks"]
    for tgt in targets:
        lines = _chunk_lines(out, tgt, n_chunks, index["chunk_size"], index["records"])
        for f, meta in zip(files, index["files"]):
            dest = out / tgt / meta["output"]
            with atomic_write(dest) as fh:
                for line in islice(lines, meta["records"]):
                    fh.write(line)
            written.append(dest)
    with atomic_write(out / "bad_lines.tsv") as fh:
        fh.write("file\tline\treason\n")
        for k in range(n_chunks):
            p = bad_path(out, k)
            if p.is_file():
                fh.write(p.read_text(encoding="utf-8"))
    _say(
        f"mt-translate: wrote {len(written)} output file(s) under {out}/{{{','.join(targets)}}}/ "
        f"and {out}/bad_lines.tsv"
    )
    return written


def _chunk_lines(out: Path, tgt: str, n_chunks: int, chunk_size: int, n_records: int) -> Iterator[str]:
    for k in range(n_chunks):
        p = chunk_path(out, tgt, k)
        with open(p, encoding="utf-8", newline="\n") as fh:
            lines = fh.readlines()
        want = min(chunk_size, n_records - k * chunk_size)
        if len(lines) != want:
            raise UserError(f"{p}: has {len(lines)} lines, expected {want}; delete it and re-run to redo the chunk")
        yield from lines
