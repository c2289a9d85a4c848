"""The released NLLB-200 dense shape in this toolkit: mt-import time and memory, and translation speed of ours
(fp32, bf16) vs transformers ``generate()`` vs CTranslate2 (its own NLLB conversion of the HF folder).

Nothing is downloaded: the Hugging Face folder is built here with transformers' M2M100 classes at
nllb-200-distilled-600M's shape (12+12 layers, d 1024, FFN 4096, 16 heads, 256,206 embedding rows,
615M parameters, float32 as published) with random weights, a small SentencePiece model trained on
synthetic text, and NllbTokenizer files listing the 202 NLLB language codes (the rows between the
pieces and the language codes' ids are fairseq's ``madeupword`` fillers, as in ``mt.importing.vocab``).

    python bench/nllb.py                      # everything: build, import, 4 engines x threads 1,2
    python bench/nllb.py --n 20 --threads 1   # a quick look

Steps, each in its own process (so memory and thread settings do not leak between engines):

1. ``build``: the HF folder (``model.safetensors``, config.json, tokenizer files).
2. ``import``: ``mt-import --format hf``: wall time of the import call and peak RSS of the process (VmHWM)
   next to the size of the weights (the importer promises about one copy, never two).
3. ``translate``: ``--n`` sentences (synthetic, ~20-30 pieces each), beam 4, the same length-sorted
   batches (``--max-tokens`` source tokens) for every engine, after a warm-up batch.

Protocol for random weights: a random model never ends a sentence by itself, and the engines' length
limits differ, so every engine is forced to run the same number of decoder steps per sentence:
``--length L`` tokens after the target-language token. Ours: ``min_len = max_len = L`` (the decoder
reads ``</s>``, the forced language token, then L tokens, then ``</s>`` is forced: L + 2 decoder steps).
transformers: ``forced_bos_token_id`` = the language token, ``min_new_tokens = max_new_tokens = L + 2``
(language token, L + 1 tokens: L + 2 steps). CTranslate2: ``target_prefix`` = the language token,
``min_decoding_length = max_decoding_length = L + 2`` (the prefix counts: L + 2 steps). The table
shows the tokens each engine produced per sentence so the protocol can be checked.

Writes ``bench/out/nllb.md`` (README table) and ``bench/out/nllb.json``. The load average (1 minute) is
recorded before and after each run: on a shared machine, numbers taken at a load above the core count
mean little. Measures, never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SRC, TGT = "eng_Latn", "fra_Latn"
ROWS = 256206  # nllb-200's embedding rows (256,204 tokens + 2 fillers)
SHAPE = dict(
    d_model=1024,
    encoder_layers=12,
    decoder_layers=12,
    encoder_ffn_dim=4096,
    decoder_ffn_dim=4096,
    encoder_attention_heads=16,
    decoder_attention_heads=16,
)
ENGINES = ("ours-fp32", "ours-bf16", "ours-int8", "hf-fp32", "ct2-fp32", "ct2-int8")
# also: ours-fp32-mkl, our float32 products on MKL as before oneDNN (``gemm_shapes.linear``), for the A/B


# --- synthetic text and the HF folder ----------------------------------------------------------------
def words(seed: int = 0, n: int = 3000) -> list[str]:
    rng = random.Random(seed)
    syl = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + ["th", "ch", "qu", "sh", "an", "en", "or"]
    return ["".join(rng.choices(syl, k=rng.choice((1, 2, 2, 3, 3, 4)))) for _ in range(n)]


def sentences(n: int, seed: int) -> list[str]:
    rng, vocab = random.Random(seed), words()
    return [" ".join(rng.choices(vocab, k=rng.randint(8, 16))).capitalize() + rng.choice(".?!") for _ in range(n)]


def build(work: Path, pieces: int) -> Path:
    """The HF folder at the released shape (random weights); returns it."""
    import sentencepiece as spm
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES as LANGS

    from mt.generate.export import nllb_tokenizer_config

    hf = work / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    text = work / "spm_train.txt"
    text.write_text("\n".join(sentences(20000, seed=1)) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(work / "sp"),
        vocab_size=pieces,
        model_type="bpe",
        character_coverage=1.0,
        minloglevel=2,
        num_threads=2,
    )
    (work / "sp.model").replace(hf / "sentencepiece.bpe.model")
    n = spm.SentencePieceProcessor(model_file=str(hf / "sentencepiece.bpe.model")).get_piece_size()
    config = M2M100Config(
        **SHAPE,
        vocab_size=ROWS,
        max_position_embeddings=1024,
        scale_embedding=True,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.0,
        activation_function="relu",
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        tokenizer_class="NllbTokenizer",
    )
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(config).eval()
    model.save_pretrained(hf)
    added = {
        0: "<s>",
        1: "<pad>",
        2: "</s>",
        3: "<unk>",
        **{n + 1 + i: c for i, c in enumerate(LANGS)},
        n + 1 + len(LANGS): "<mask>",
    }
    tok_cfg, special = nllb_tokenizer_config(list(added.items()), list(LANGS), legacy=False, max_length=1024)
    (hf / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1), encoding="utf-8")
    (hf / "special_tokens_map.json").write_text(json.dumps(special, indent=1), encoding="utf-8")
    return hf


def do_import(work: Path) -> dict:
    from mt.common import pagemem
    from mt.importing.cli import import_model

    base = pagemem.current_rss() or 0
    t0 = time.perf_counter()
    import_model("hf", work / "hf", work / "imported", force=True)
    secs = time.perf_counter() - t0
    weights = (work / "hf" / "model.safetensors").stat().st_size
    return {"seconds": secs, "peak_rss": pagemem.peak_rss(), "rss_before": base, "weights_bytes": weights}


# --- one engine ---------------------------------------------------------------------------------------
def translate(
    work: Path, engine: str, threads: int, n: int, beam: int, length: int, max_tokens: int, profile: bool = False
) -> dict:
    import torch

    torch.set_num_threads(threads)
    from mt.data.rows import source_row
    from mt.generate.search import SearchConfig
    from mt.generate.translator import Translator, length_batches

    if engine == "ours-fp32-mkl":
        from mt.models import gemm_shapes

        gemm_shapes.ONEDNN = None
    quantize = "int8" if engine == "ours-int8" else "none"
    tr = Translator(work / "imported" / "checkpoint.pt", bf16=engine == "ours-bf16", threads=threads, quantize=quantize)
    ids = tr.encode(sentences(n, seed=2))
    d = tr.dictionary
    batches = length_batches([len(x) + 2 for x in ids], max_tokens)
    if engine.startswith("ours"):
        cfg = SearchConfig(beam=beam, min_len=length, max_len_a=0, max_len_b=length)

        def run(idx):
            return [h[0].tokens for h in tr.translate_ids([ids[i] for i in idx], SRC, TGT, cfg, max_tokens)]

    elif engine == "hf-fp32":
        from transformers import M2M100ForConditionalGeneration

        model = M2M100ForConditionalGeneration.from_pretrained(work / "hf").eval()
        lang, pad = tr.lang_token(TGT), d.pad()

        def run(idx):
            rows = [source_row(ids[i], tr.lang_token(SRC), d.eos()) for i in idx]
            inp = torch.full((len(rows), max(map(len, rows))), pad)
            for b, r in enumerate(rows):
                inp[b, : len(r)] = torch.tensor(r)
            with torch.no_grad():
                out = model.generate(
                    input_ids=inp,
                    attention_mask=inp.ne(pad).long(),
                    num_beams=beam,
                    do_sample=False,
                    forced_bos_token_id=lang,
                    min_new_tokens=length + 2,
                    max_new_tokens=length + 2,
                )
            return [[t for t in row[2:] if t not in (pad, d.eos())] for row in out.tolist()]

    else:
        import ctranslate2
        from ctranslate2.converters import TransformersConverter

        ct2_dir = work / "ct2"
        if not (ct2_dir / "model.bin").is_file():
            TransformersConverter(str(work / "hf")).convert(str(ct2_dir), force=True)
        ct = ctranslate2.Translator(
            str(ct2_dir),
            device="cpu",
            compute_type=engine.split("-")[1].replace("fp32", "float32"),  # int8: its own weight quantisation
            intra_threads=threads,
            inter_threads=1,
        )

        def run(idx):
            src = [[SRC, *tr.pieces(ids[i]), "</s>"] for i in idx]
            res = ct.translate_batch(
                src,
                target_prefix=[[TGT]] * len(idx),
                beam_size=beam,
                min_decoding_length=length + 2,
                max_decoding_length=length + 2,
            )
            return [r.hypotheses[0][1:] for r in res]

    run(batches[0][:4])  # warm-up
    load0 = os.getloadavg()[0]
    prof = None
    if profile and not engine.startswith("ct2"):  # where the time goes (torch ops; CTranslate2 is not torch)
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        prof = torch_profile(activities=[ProfilerActivity.CPU])
        prof.__enter__()
    t0 = time.perf_counter()
    out = [h for idx in batches for h in run(idx)]
    secs = time.perf_counter() - t0
    if prof is not None:
        prof.__exit__(None, None, None)
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        (work / f"profile-{engine}-x{threads}.txt").write_text(table, encoding="utf-8")
    return {
        "engine": engine,
        "threads": threads,
        "seconds": secs,
        "sent_per_s": n / secs,
        "tokens_per_sentence": sum(map(len, out)) / len(out),
        "load_before": load0,
        "load_after": os.getloadavg()[0],
        "source_tokens": sum(map(len, ids)) / len(ids),
    }


# --- orchestration ------------------------------------------------------------------------------------
def child(args: argparse.Namespace, step: str, threads: int = 1, engine: str = "") -> dict:
    """Run one step in a fresh process; returns what it printed last (JSON)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        __file__,
        "--work",
        str(args.work),
        "--step",
        step,
        "--engine",
        engine,
        "--threads",
        str(threads),
        "--n",
        str(args.n),
        "--beam",
        str(args.beam),
        "--length",
        str(args.length),
        "--max-tokens",
        str(args.max_tokens),
        "--pieces",
        str(args.pieces),
    ] + (["--profile"] if args.profile else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{step} {engine} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(imp: dict, rows: list[dict], args: argparse.Namespace) -> str:
    gib = 2**30
    lines = [
        f"nllb-200-distilled-600M shape, random weights ({imp['weights_bytes'] / gib:.2f} GiB float32), "
        f"{platform.machine()} {os.cpu_count()} cores ({platform.processor() or 'cpu'}).",
        "",
        f"mt-import --format hf: {imp['seconds']:.1f} s, peak RSS {imp['peak_rss'] / gib:.2f} GiB "
        f"({(imp['peak_rss'] - imp['rss_before']) / gib:.2f} GiB above the process before the import).",
        "",
        f"Translation, {args.n} sentences ({rows[0]['source_tokens']:.1f} source tokens on average), beam {args.beam}, "
        f"every engine forced to {args.length + 2} decoder steps per sentence, batches of <= {args.max_tokens} "
        "source tokens:",
        "",
        "| engine | threads | sentences/s | vs transformers | vs CTranslate2 fp32 | vs CTranslate2 int8 "
        "| tokens/sentence | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ref = {
            e: next((x for x in rows if x["engine"] == e and x["threads"] == r["threads"]), None)
            for e in ("hf-fp32", "ct2-fp32", "ct2-int8")
        }
        vs = [f"{r['sent_per_s'] / ref[e]['sent_per_s']:.2f}x" if ref[e] else "n/a" for e in ref]
        lines.append(
            f"| {r['engine']} | {r['threads']} | {r['sent_per_s']:.2f} | {vs[0]} | {vs[1]} | {vs[2]} | "
            f"{r['tokens_per_sentence']:.1f} | {r['load_before']:.2f}-{r['load_after']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/nllb-bench", help="folder for the HF folder, import and CT2 model")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--length", type=int, default=20, help="forced output length L (see the module doc)")
    p.add_argument("--max-tokens", type=int, default=1024, help="source tokens per batch, every engine")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--pieces", type=int, default=8000, help="SentencePiece model size")
    p.add_argument("--out", default=str(REPO / "bench" / "out"))
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile the timed run of the torch engines: WORK/profile-ENGINE-xTHREADS.txt",
    )
    p.add_argument("--step", default="", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.work = Path(args.work)
    if args.step == "build":
        build(args.work, args.pieces)
        print("{}")
        return 0
    if args.step == "import":
        print(json.dumps(do_import(args.work)))
        return 0
    if args.step == "translate":
        print(
            json.dumps(
                translate(
                    args.work,
                    args.engine,
                    int(args.threads),
                    args.n,
                    args.beam,
                    args.length,
                    args.max_tokens,
                    args.profile,
                )
            )
        )
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    if not (args.work / "hf" / "model.safetensors").is_file():
        print("bench: building the HF folder ...", file=sys.stderr)
        child(args, "build")
    print("bench: mt-import ...", file=sys.stderr)
    imp = child(args, "import")
    print(f"bench: import {imp['seconds']:.1f} s, peak RSS {imp['peak_rss'] / 2**30:.2f} GiB", file=sys.stderr)
    rows: list[dict] = []
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for threads in [int(t) for t in args.threads.split(",")]:
        for engine in args.engines.split(","):
            r = child(args, "translate", threads, engine)
            rows.append(r)
            print(
                f"bench: {engine} x{threads}: {r['sent_per_s']:.2f} sent/s ({r['seconds']:.1f} s, "
                f"{r['tokens_per_sentence']:.1f} tokens/sentence, load {r['load_before']:.2f})",
                file=sys.stderr,
            )
            md = table(imp, rows, args)  # written after every engine: a long run keeps what it measured
            (out / "nllb.md").write_text(md, encoding="utf-8")
            (out / "nllb.json").write_text(
                json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "import": imp, "rows": rows}, indent=1)
                + "\n"
            )
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
