"""``mt-interactive``: raw text in (stdin or ``--input``), translations out, ``--buffer-size`` lines at a time.

``--output-format plain`` (default) prints one detokenised translation per input line, so it composes in
pipes (``mt-interactive ... < in.txt > out.txt`` is line-aligned; an empty or undecodable line gives an
empty line). ``--output-format fairseq`` prints fairseq-interactive's lines per sentence: ``S-i`` (the
source pieces with ``__src__``), ``W-i`` (seconds), then ``H-i``/``D-i``/``P-i`` per hypothesis
(``mt.generate.fairseq_format``), for every input line: an empty or undecodable one gets an empty
hypothesis (score 0), so ``grep ^D-`` stays line-aligned with the input. Output is flushed after every
buffer, so typing works interactively. A leading UTF-8 byte-order mark is dropped; a line longer than the
model's ``max_source_positions`` is cut to fit and named on stderr, as is a direction the checkpoint was
not trained on (once, at the start).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Iterator

from mt.common.errors import UserError
from mt.common.flags import arg
from mt.common.langs import check_code
from mt.common.textio import chunks
from mt.generate import fairseq_format as ff
from mt.generate.moe_inference import MoEInferenceConfig, world_size
from mt.generate.readers import strip_bom
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator

OUTPUT_FORMATS = ("plain", "fairseq")


@dataclass
class InteractiveConfig:
    path: str = ""
    src_lang: str = arg("", name="--source-lang", short="-s", required=True)
    tgt_lang: str = arg("", name="--target-lang", short="-t", required=True)
    data: str = ""
    spm_model: str = ""
    input: str = arg("-", "file to read instead of stdin", show_default=False)
    buffer_size: int = arg(1, "lines translated together")
    output_format: str = arg("plain", choices=list(OUTPUT_FORMATS), show_default=False)
    remove_bpe: str | None = ff.remove_bpe_arg()
    search: SearchConfig = field(default_factory=SearchConfig)
    max_tokens: int = 4096
    device: str = "cpu"
    bf16: bool = False
    quantize: str = "none"
    threads: int = 0
    moe: MoEInferenceConfig = field(default_factory=MoEInferenceConfig)

    def check(self) -> "InteractiveConfig":
        check_code(self.src_lang, "-s/--source-lang")
        check_code(self.tgt_lang, "-t/--target-lang")
        if self.buffer_size < 1:
            raise UserError(f"--buffer-size must be at least 1, got {self.buffer_size}")
        if self.output_format not in OUTPUT_FORMATS:
            raise UserError(f"--output-format {self.output_format!r}: choose {' or '.join(OUTPUT_FORMATS)}")
        self.search.check()
        self.moe.check()
        if world_size() > 1:
            raise UserError(
                "mt-interactive runs in one process; expert-parallel inference (torchrun) is for mt-generate "
                "and the Translator API"
            )
        return self


def _lines(stream: IO[bytes], name: str) -> Iterator[str | None]:
    """The decoded lines of ``stream``; None (an empty translation, said on stderr) for one that is not UTF-8."""
    for lineno, raw in enumerate(stream, 1):
        raw = raw.rstrip(b"\r\n")
        if lineno == 1:
            raw = strip_bom(raw)
        try:
            line: str | None = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            _say(f"{name}:{lineno}: invalid UTF-8 at byte {exc.start}: empty translation")
            line = None
        yield line


def _say(msg: str) -> None:
    print(f"mt-interactive: {msg}", file=sys.stderr, flush=True)


def interactive(cfg: InteractiveConfig, translator: Translator | None = None, out: IO[str] | None = None) -> int:
    """Translate until end of input; returns the number of lines read."""
    cfg.check()
    out = out or sys.stdout
    tr = translator or Translator.from_options(cfg)
    src_tok = tr.lang_token(cfg.src_lang, "-s/--source-lang")
    tr.lang_token(cfg.tgt_lang, "-t/--target-lang")
    for d in tr.untrained([(cfg.src_lang, cfg.tgt_lang)]):
        _say(
            f"warning: {tr.loaded.path.name} was not trained on {d} (only on {', '.join(tr.lang_pairs[:12])}"
            f"{', ...' if len(tr.lang_pairs) > 12 else ''}): expect poor zero-shot translations"
        )
    if sys.stdin.isatty() and cfg.input == "-":
        print(f"mt-interactive: type {cfg.src_lang} sentences, one per line (Ctrl-D to end)", file=sys.stderr)
    name = "<stdin>" if cfg.input == "-" else cfg.input
    stream = sys.stdin.buffer if cfg.input == "-" else open(cfg.input, "rb")
    start = 0
    try:
        for buf in chunks(_lines(stream, name), cfg.buffer_size):
            out.write("".join(line + "\n" for line in _translate_buffer(tr, cfg, buf, start, src_tok, name)))
            out.flush()
            start += len(buf)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if tr.moe is not None:
        _say(f"{tr.moe_summary()}")
    return start


def _translate_buffer(
    tr: Translator, cfg: InteractiveConfig, buf: list[str | None], start: int, src_tok: int, name: str
) -> list[str]:
    """Output lines of one buffer: one per input line (plain), or its S/W/H/D/P lines (fairseq)."""
    live = [i for i, s in enumerate(buf) if s and s.strip()]
    ids: list[list[int]] = [[] for _ in buf]  # empty or undecodable: an empty translation, nothing searched
    for i, e in zip(live, tr.encode([buf[i] for i in live]) if live else []):
        ids[i] = e
    limit = tr.source_limit
    for i in live:
        if len(ids[i]) > limit:
            _say(f"{name}:{start + i + 1}: {len(ids[i])} tokens, more than the model's {limit}: cut to fit")
    t0 = time.perf_counter()
    hyps = tr.translate_ids(ids, cfg.src_lang, cfg.tgt_lang, cfg.search, cfg.max_tokens, warn=lambda m: None)
    per_sentence = (time.perf_counter() - t0) / max(len(live), 1)
    lines = []
    for i, hs in enumerate(hyps):
        if cfg.output_format == "plain":
            lines.append(" ".join(tr.detokenize(hs[0].tokens).splitlines()))
            continue
        src = ff.post_process(ff.pieces_string(tr.dictionary, [src_tok] + ids[i][:limit]), cfg.remove_bpe)
        lines.append(f"S-{start + i}\t{src}")
        lines.append(f"W-{start + i}\t{per_sentence if ids[i] else 0.0:.3f}\tseconds")
        rendered = [
            (
                h.score,
                ff.post_process(ff.pieces_string(tr.dictionary, h.tokens), cfg.remove_bpe),
                tr.detokenize(h.tokens),
                h.positional_scores,
            )
            for h in hs[: cfg.search.nbest]
        ]
        lines += ff.sentence_lines(start + i, None, None, rendered)
    return lines
