"""``mt-generate``: translate a binarized subset (fairseq-generate) and score it with chrF++.

Reads ``{data}/{subset}.{src}-{tgt}.{lang}.bin/.idx`` (``devtest``/``dev`` are aliases of the ``test`` /
``valid`` subsets that mt-preprocess writes), translates every sentence, prints fairseq's S/T/H/D/P lines
(``mt.generate.fairseq_format``) batch by batch as fairseq does (batches are sorted by length, so ids
come out of order: ``grep ^D- | sort -V``), and last ``Generate {subset} with beam=N: chrF2++ = ...``
computed by sacrebleu on detokenised hypotheses and references (the references are the binarized
targets turned back into text; ``mt-eval dir`` against ``CORPUS/devtest`` is the official number).

``--results-path DIR`` writes ``DIR/generate-{subset}.txt`` (``generate-{subset}.{src}-{tgt}.txt`` when
several pairs are generated) and ``DIR/{src}-{tgt}.hyp``: detokenised hypotheses in input order, the
generation-directory layout ``mt-eval dir`` reads (``eval/gendir.py``). Files are written atomically.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from mt.data.langs import parse_pair
from mt.data.pair_dataset import load_direction
from mt.errors import UserError
from mt.generate import fairseq_format as ff
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator
from mt.util import atomic_write


@dataclass
class GenerateConfig:
    data: str = ""
    path: str = ""
    gen_subset: str = "test"
    lang_pairs: list[str] = field(default_factory=list)  # "src-tgt"
    search: SearchConfig = field(default_factory=SearchConfig)
    max_tokens: int = 4096
    batch_size: int = 0
    remove_bpe: str | None = None
    results_path: str = ""
    spm_model: str = ""
    device: str = "cpu"
    bf16: bool = False
    threads: int = 0
    quiet: bool = False  # no S/T/H/D/P lines, only the score
    progress: bool = True

    def check(self) -> "GenerateConfig":
        if not self.lang_pairs:
            raise UserError("say which direction to generate: -s SRC -t TGT, or --lang-pairs SRC-TGT,...")
        for p in self.lang_pairs:
            parse_pair(p)
        if self.remove_bpe not in (None, *ff.REMOVE_BPE):
            raise UserError(f"--remove-bpe {self.remove_bpe!r}: only 'sentencepiece' is supported (our data is SentencePiece)")
        self.search.check()
        return self


@dataclass
class DirectionResult:
    direction: str
    sentences: int
    tokens: int
    seconds: float
    chrf: float | None
    score_line: str
    hyps: list[str]


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def generate_direction(
    tr: Translator, cfg: GenerateConfig, direction: str, out: IO[str], progress: bool
) -> DirectionResult:
    from sacrebleu.metrics import CHRF
    from tqdm import tqdm

    src_lang, tgt_lang = parse_pair(direction)
    d = tr.dictionary
    ds = load_direction(cfg.data, cfg.gen_subset, direction, d, d.langs())
    n = len(ds)
    if n == 0:
        raise UserError(f"{cfg.data}: the {cfg.gen_subset} subset of {direction} is empty")
    srcs = [ds.src[i].tolist()[:-1] for i in range(n)]  # binarized rows end with </s>
    tgts = [ds.tgt[i].tolist() for i in range(n)]
    too_long = sum(len(s) + 2 > tr.max_source_positions for s in srcs)
    if too_long:
        _say(f"mt-generate: {direction}: {too_long} source sentences are longer than max_source_positions "
             f"{tr.max_source_positions} and are cut to fit")  # fmt: skip
    src_tok = d.lang_index(src_lang)
    hyps_text: list[str] = [""] * n
    ntok = 0
    bar = tqdm(total=n, unit="sent", desc=direction, disable=not progress, file=sys.stderr, leave=False)

    def on_batch(idx, hyps) -> None:
        nonlocal ntok
        lines = []
        for i, hs in zip(idx, hyps):
            hs = hs[: cfg.search.nbest]
            rendered = []
            for h in hs:
                pieces = ff.pieces_string(d, h.tokens)
                rendered.append((h.score, ff.post_process(pieces, cfg.remove_bpe), tr.detokenize(h.tokens), h.positional_scores))
            hyps_text[i] = _one_line(rendered[0][2]) if rendered else ""
            ntok += len(hs[0].tokens) + 1 if hs else 0
            if not cfg.quiet:
                src = ff.post_process(ff.pieces_string(d, [src_tok] + srcs[i]), cfg.remove_bpe)
                tgt = ff.post_process(ff.pieces_string(d, tgts[i], escape_unk=True), cfg.remove_bpe)
                lines += ff.sentence_lines(i, src, tgt, rendered)
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()
        bar.update(len(idx))

    t0 = time.perf_counter()
    tr.translate_ids(srcs, src_lang, tgt_lang, cfg.search, cfg.max_tokens, cfg.batch_size, on_batch=on_batch)
    seconds = time.perf_counter() - t0
    bar.close()
    refs = [_one_line(tr.detokenize(t[:-1] if t and t[-1] == d.eos() else t)) for t in tgts]
    chrf = CHRF(word_order=2).corpus_score(hyps_text, [refs])
    _say(f"mt-generate: {direction}: translated {n} sentences ({ntok} tokens) in {seconds:.1f}s "
         f"({n / max(seconds, 1e-9):.2f} sentences/s, {ntok / max(seconds, 1e-9):.2f} tokens/s)")  # fmt: skip
    line = f"Generate {cfg.gen_subset} with beam={cfg.search.beam}: {chrf}"
    return DirectionResult(direction, n, ntok, seconds, chrf.score, line, hyps_text)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def generate(cfg: GenerateConfig, translator: Translator | None = None) -> list[DirectionResult]:
    """Generate every direction of ``cfg.lang_pairs``; returns the per-direction results."""
    cfg.check()
    if not Path(cfg.data).is_dir():
        raise UserError(f"{cfg.data}: data directory not found (the mt-preprocess output with dict.txt)")
    tr = translator or Translator(cfg.path, cfg.device, cfg.bf16, data=cfg.data, spm_model=cfg.spm_model or None,
                                  threads=cfg.threads)  # fmt: skip
    results = []
    many = len(cfg.lang_pairs) > 1
    for direction in cfg.lang_pairs:
        if cfg.results_path:
            res_dir = Path(cfg.results_path)
            name = f"generate-{cfg.gen_subset}.{direction}.txt" if many else f"generate-{cfg.gen_subset}.txt"
            with atomic_write(res_dir / name) as fh:
                r = generate_direction(tr, cfg, direction, fh, cfg.progress)
                fh.write(r.score_line + "\n")
            src, tgt = parse_pair(direction)
            with atomic_write(res_dir / f"{src}-{tgt}.hyp") as fh:
                fh.writelines(h + "\n" for h in r.hyps)
            print(f"{direction}: {r.score_line}" if many else r.score_line, flush=True)
        else:
            r = generate_direction(tr, cfg, direction, sys.stdout, cfg.progress)
            print(f"{direction}: {r.score_line}" if many else r.score_line, flush=True)
        results.append(r)
    return results
