"""``mt-interactive``: raw text in (stdin or ``--input``), translations out, ``--buffer-size`` lines at a time.

``--output-format plain`` (default) prints one detokenised translation per input line, so it composes in
pipes (``mt-interactive ... < in.txt > out.txt`` is line-aligned; an empty or undecodable line gives an
empty line). ``--output-format fairseq`` prints fairseq-interactive's lines per sentence: ``S-i`` (the
source pieces with ``__src__``), ``W-i`` (seconds), then ``H-i``/``D-i``/``P-i`` per hypothesis
(``mt.generate.fairseq_format``). Output is flushed after every buffer, so typing works interactively.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Iterator

from mt.data.langs import check_code
from mt.errors import UserError
from mt.generate import fairseq_format as ff
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator

OUTPUT_FORMATS = ("plain", "fairseq")


@dataclass
class InteractiveConfig:
    path: str = ""
    src_lang: str = ""
    tgt_lang: str = ""
    data: str = ""
    spm_model: str = ""
    input: str = "-"
    buffer_size: int = 1
    output_format: str = "plain"
    remove_bpe: str | None = None
    search: SearchConfig = field(default_factory=SearchConfig)
    max_tokens: int = 4096
    device: str = "cpu"
    bf16: bool = False
    threads: int = 0

    def check(self) -> "InteractiveConfig":
        check_code(self.src_lang, "-s/--source-lang")
        check_code(self.tgt_lang, "-t/--target-lang")
        if self.buffer_size < 1:
            raise UserError(f"--buffer-size must be at least 1, got {self.buffer_size}")
        if self.output_format not in OUTPUT_FORMATS:
            raise UserError(f"--output-format {self.output_format!r}: choose {' or '.join(OUTPUT_FORMATS)}")
        self.search.check()
        return self


def _buffers(stream: IO[bytes], size: int, name: str) -> Iterator[list[str | None]]:
    buf: list[str | None] = []
    for lineno, raw in enumerate(stream, 1):
        raw = raw.rstrip(b"\r\n")
        try:
            buf.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            print(f"mt-interactive: {name}:{lineno}: invalid UTF-8 at byte {exc.start}: empty translation",
                  file=sys.stderr, flush=True)  # fmt: skip
            buf.append(None)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def interactive(cfg: InteractiveConfig, translator: Translator | None = None, out: IO[str] | None = None) -> int:
    """Translate until end of input; returns the number of lines read."""
    cfg.check()
    out = out or sys.stdout
    tr = translator or Translator(cfg.path, cfg.device, cfg.bf16, data=cfg.data or None,
                                  spm_model=cfg.spm_model or None, threads=cfg.threads)  # fmt: skip
    src_tok = tr.lang_token(cfg.src_lang)
    tr.lang_token(cfg.tgt_lang)
    if sys.stdin.isatty() and cfg.input == "-":
        print(f"mt-interactive: type {cfg.src_lang} sentences, one per line (Ctrl-D to end)", file=sys.stderr)
    stream = sys.stdin.buffer if cfg.input == "-" else open(cfg.input, "rb")
    start = 0
    try:
        for buf in _buffers(stream, cfg.buffer_size, "<stdin>" if cfg.input == "-" else cfg.input):
            live = [i for i, s in enumerate(buf) if s and s.strip()]
            ids = tr.encode([buf[i] for i in live]) if live else []
            t0 = time.perf_counter()
            hyps = tr.translate_ids(ids, cfg.src_lang, cfg.tgt_lang, cfg.search, cfg.max_tokens) if ids else []
            per_sentence = (time.perf_counter() - t0) / max(len(ids), 1)
            by_line, ids_by_line = dict(zip(live, hyps)), dict(zip(live, ids))
            lines = []
            for i in range(len(buf)):
                hs = by_line.get(i, [])
                if cfg.output_format == "plain":
                    lines.append(" ".join(tr.detokenize(hs[0].tokens).splitlines()) if hs else "")
                    continue
                src_ids = [src_tok] + list(ids_by_line.get(i, []))
                lines.append(f"S-{start + i}\t{ff.post_process(ff.pieces_string(tr.dictionary, src_ids), cfg.remove_bpe)}")
                lines.append(f"W-{start + i}\t{per_sentence if hs else 0.0:.3f}\tseconds")
                rendered = [(h.score, ff.post_process(ff.pieces_string(tr.dictionary, h.tokens), cfg.remove_bpe),
                             tr.detokenize(h.tokens), h.positional_scores) for h in hs[: cfg.search.nbest]]  # fmt: skip
                lines += ff.sentence_lines(start + i, None, None, rendered)
            out.write("".join(line + "\n" for line in lines))
            out.flush()
            start += len(buf)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    return start
