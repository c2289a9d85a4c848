"""``mt-generate``: translate a binarized subset (fairseq-generate) and score it with chrF++ or BLEU.

Reads ``{data}/{subset}.{src}-{tgt}.{lang}.bin/.idx`` (``devtest``/``dev`` are aliases of the ``test`` /
``valid`` subsets that mt-preprocess writes), translates every sentence, prints fairseq's S/T/H/D/P lines
(``mt.generate.fairseq_format``) batch by batch as fairseq does (batches are sorted by length, so ids
come out of order: ``grep ^D- | sort -V``), and last ``Generate {subset} with beam=N: chrF2++ = ...``
(``--scoring chrf``, the default) or fairseq's ``... BLEU4 = 28.12, 59.0/34.2/21.6/14.1 (BP=...)``
(``--scoring bleu``), computed by sacrebleu on detokenised hypotheses and references (the references are
the binarized targets turned back into text; ``mt-eval dir`` against ``CORPUS/devtest`` is the official
number). BLEU is tokenised for the target language as ``mt-eval`` does (``eval.metrics.bleu_tokenizer``:
``zh`` for Chinese, ...); its sacrebleu signature goes to stderr.

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

from mt.common.errors import UserError
from mt.common.files import atomic_write
from mt.common.flags import arg
from mt.common.langs import parse_pair
from mt.data.pair_dataset import load_direction
from mt.formats.hyp_files import hyp_name
from mt.generate import fairseq_format as ff
from mt.generate.moe_inference import MoEInferenceConfig
from mt.generate.search import SearchConfig
from mt.generate.translator import Translator

SCORINGS = ("chrf", "bleu")


@dataclass
class GenerateConfig:
    data: str = arg(
        "",
        "binarized data directory (mt-preprocess output: dict.txt, spm.model, {subset}.*.bin/.idx)",
        positional=True,
        required=True,
    )
    path: str = ""
    gen_subset: str = arg("test", "test|devtest, valid|dev, or train")
    # "src-tgt"; the command line also takes one as -s/-t
    lang_pairs: list[str] = arg([], "several directions, comma-separated: eng_Latn-deu_Latn,deu_Latn-eng_Latn")
    search: SearchConfig = field(default_factory=SearchConfig)
    max_tokens: int = 4096
    batch_size: int = 0
    remove_bpe: str | None = ff.remove_bpe_arg()
    results_path: str = arg("", "write generate-{subset}.txt and {src}-{tgt}.hyp here")
    spm_model: str = ""
    device: str = "cpu"
    bf16: bool = False
    quantize: str = "none"
    threads: int = 0
    quiet: bool = arg(False, "only the score line (no S/T/H/D/P lines)")
    progress: bool = True
    moe: MoEInferenceConfig = field(default_factory=MoEInferenceConfig)
    scoring: str = arg(
        "chrf",
        "the last line's metric: chrf = chrF2++ (default: NLLB's metric, and this line's "
        "format before the flag existed, so existing scripts keep working; BLEU with 13a is weak "
        "for many FLORES-200 languages) | bleu = fairseq's 'BLEU4 = ...' line (fairseq's default)",
        choices=list(SCORINGS),
        show_default=False,
    )

    def check(self) -> "GenerateConfig":
        if not self.lang_pairs:
            raise UserError("say which direction to generate: -s SRC -t TGT, or --lang-pairs SRC-TGT,...")
        for p in self.lang_pairs:
            parse_pair(p)
        if self.remove_bpe not in (None, *ff.REMOVE_BPE):
            raise UserError(
                f"--remove-bpe {self.remove_bpe!r}: only 'sentencepiece' is supported (our data is SentencePiece)"
            )
        if self.scoring not in SCORINGS:
            raise UserError(f"--scoring {self.scoring!r}: choose {' or '.join(SCORINGS)}")
        self.search.check()
        self.moe.check()
        return self


@dataclass
class DirectionResult:
    direction: str
    sentences: int
    tokens: int
    seconds: float
    score: float | None  # chrF2++ or BLEU (``metric``)
    score_line: str
    hyps: list[str]
    metric: str = "chrf"
    signature: str = ""  # sacrebleu's


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _warning(msg: str) -> None:
    _say(f"mt-generate: warning: {msg}")


def corpus_score(hyps: list[str], refs: list[str], scoring: str, tgt_lang: str) -> tuple[float, str, str, str | None]:
    """(score, result string for the last line, sacrebleu signature, a note) of ``--scoring``."""
    if scoring == "chrf":
        from sacrebleu.metrics import CHRF

        chrf = CHRF(word_order=2)
        res = chrf.corpus_score(hyps, [refs])
        return res.score, str(res), chrf.get_signature().format(), None
    from eval.metrics import MetricSpec  # the tokenizer rule of mt-eval (zh for Chinese, ...)

    spec, note = MetricSpec("bleu").for_target(tgt_lang)
    bleu = spec.build()[0]
    res = bleu.corpus_score(hyps, [refs])
    line = ff.bleu_string(res.score, res.precisions, res.bp, res.sys_len, res.ref_len)
    return res.score, line, bleu.get_signature().format(), note


def load_subset(tr: Translator, cfg: GenerateConfig, direction: str):
    """The binarized subset of ``direction``, or a UserError (a language the model lacks, no data, empty)."""
    src_lang, tgt_lang = parse_pair(direction)
    tr.check_lang(src_lang, "source language")
    tr.check_lang(tgt_lang, "target language")
    d = tr.dictionary
    ds = load_direction(cfg.data, cfg.gen_subset, direction, d, d.langs())
    if len(ds) == 0:
        raise UserError(f"{cfg.data}: the {cfg.gen_subset} subset of {direction} is empty")
    return ds


def generate_direction(
    tr: Translator, cfg: GenerateConfig, direction: str, out: IO[str], progress: bool, report: bool = True, ds=None
) -> DirectionResult:
    from tqdm import tqdm

    src_lang, tgt_lang = parse_pair(direction)
    d = tr.dictionary
    ds = ds if ds is not None else load_subset(tr, cfg, direction)
    n = len(ds)
    srcs = [ds.src[i].tolist()[:-1] for i in range(n)]  # binarized rows end with </s>
    tgts = [ds.tgt[i].tolist() for i in range(n)]
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
                rendered.append(
                    (h.score, ff.post_process(pieces, cfg.remove_bpe), tr.detokenize(h.tokens), h.positional_scores)
                )
            hyps_text[i] = _one_line(rendered[0][2]) if rendered else ""
            ntok += len(hs[0].positional_scores) if hs else 0  # tokens + </s>; none for an empty source
            if not cfg.quiet:
                src = ff.post_process(ff.pieces_string(d, [src_tok] + srcs[i]), cfg.remove_bpe)
                tgt = ff.post_process(ff.pieces_string(d, tgts[i], escape_unk=True), cfg.remove_bpe)
                lines += ff.sentence_lines(i, src, tgt, rendered)
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()
        bar.update(len(idx))

    t0 = time.perf_counter()
    warn = (lambda m: _warning(f"{direction}: {m}")) if report else (lambda m: None)
    try:
        tr.translate_ids(srcs, src_lang, tgt_lang, cfg.search, cfg.max_tokens, cfg.batch_size, on_batch, warn=warn)
    finally:  # also on errors: the bar's line is cleared before any message
        bar.close()
    seconds = time.perf_counter() - t0
    refs = [_one_line(tr.detokenize(t[:-1] if t and t[-1] == d.eos() else t)) for t in tgts]
    score, result, signature, note = corpus_score(hyps_text, refs, cfg.scoring, tgt_lang)
    if report:
        _say(
            f"mt-generate: {direction}: translated {n} sentences ({ntok} tokens) in {seconds:.1f}s "
            f"({n / max(seconds, 1e-9):.2f} sentences/s, {ntok / max(seconds, 1e-9):.2f} tokens/s)"
        )
        if note:
            _say(f"mt-generate: note: {note}")
        _say(f"mt-generate: {direction}: sacrebleu signature {signature}")
    line = f"Generate {cfg.gen_subset} with beam={cfg.search.beam}: {result}"
    return DirectionResult(direction, n, ntok, seconds, score, line, hyps_text, cfg.scoring, signature)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def generate(cfg: GenerateConfig, translator: Translator | None = None) -> list[DirectionResult]:
    """Generate every direction of ``cfg.lang_pairs``; returns the per-direction results."""
    cfg.check()
    if not Path(cfg.data).is_dir():
        raise UserError(f"{cfg.data}: data directory not found (the mt-preprocess output with dict.txt)")
    tr = translator or Translator.from_options(cfg)
    if tr.rank != 0:  # expert-parallel inference: every rank decodes the same batches, rank 0 writes
        return _follow(tr, cfg)
    results = []
    many = len(cfg.lang_pairs) > 1
    subsets = {d: load_subset(tr, cfg, d) for d in cfg.lang_pairs}  # every direction checked before any output
    for direction in cfg.lang_pairs:
        if cfg.results_path:
            res_dir = Path(cfg.results_path)
            name = f"generate-{cfg.gen_subset}.{direction}.txt" if many else f"generate-{cfg.gen_subset}.txt"
            with atomic_write(res_dir / name) as fh:
                r = generate_direction(tr, cfg, direction, fh, cfg.progress, ds=subsets[direction])
                fh.write(r.score_line + "\n")
            src, tgt = parse_pair(direction)
            with atomic_write(res_dir / hyp_name(src, tgt)) as fh:
                fh.writelines(h + "\n" for h in r.hyps)
            print(f"{direction}: {r.score_line}" if many else r.score_line, flush=True)
        else:
            r = generate_direction(tr, cfg, direction, sys.stdout, cfg.progress, ds=subsets[direction])
            print(f"{direction}: {r.score_line}" if many else r.score_line, flush=True)
        results.append(r)
    if tr.moe is not None:
        _say(f"mt-generate: {tr.moe_summary()}")
    return results


def _follow(tr: Translator, cfg: GenerateConfig) -> list[DirectionResult]:
    """A rank > 0 of expert-parallel inference: the same work as rank 0, nothing written."""
    import io

    results = [generate_direction(tr, cfg, d, io.StringIO(), False, report=False) for d in cfg.lang_pairs]
    if tr.moe is not None:
        _say(f"mt-generate: {tr.moe_summary()}")
    return results
