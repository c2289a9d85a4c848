"""NLLB-MoE on one machine: memory with expert buffering, and language-specific expert pruning.

``--part memory``: a synthetic model with the released NLLB-MoE 54.5B's expert count and layer pattern (24 + 24
layers, 128 experts in every 4th layer: 12 MoE layers) at reduced width (``--d``, ``--ffn``), written as
the Hugging Face folder is published (``model_type`` nllb-moe, safetensors in shards, bf16), imported with
``mt-import --dtype bfloat16`` (peak RSS and time), then translating ``--n`` sentences with
``--bf16 --expert-cache K`` for K = 4, 16, 128 (experts memory-mapped from the imported expert files), and
with all experts loaded in memory (no cache) for reference. Each run is a fresh process; reported: its peak
RSS, the RSS of a process that only imported the code (the floor), and what the model accounts for: the
dense part (bf16) + K resident experts per MoE layer. Random weights: routing is near uniform, so the cache
hit rate is a worst case.

``--part pruning``: a small MoE model trained here for a few minutes on the gettext corpus of this machine
(``mt-data build gettext``, English <-> German and French, short sentences; ``transformer_mini``, 8 experts
in every layer, EOM 0.1, fp32 on ``--threads`` threads), then per direction: ``mt-moe-stats`` on the dev set of
that direction, ``mt-moe-prune`` keeping 75 / 50 / 20 % of the experts (25 / 50 / 80 % removed), and chrF++
on devtest of the full and each pruned model (greedy), next to the expert and model sizes. A control per
level keeps the same number of experts chosen at random instead of by the statistics.

    python bench/nllb_moe.py --part memory --work /tmp/nllb-moe-bench --threads 1
    python bench/nllb_moe.py --part pruning --work /tmp/nllb-moe-bench --threads 1 --max-update 900

Writes ``bench/out/nllb_moe_{part}.{json,md}``. Measures, never asserts. The synthetic files are built with
the test fixtures (``tests/nllb_fixtures.py``: SentencePiece model, tokenizer files, config.json).
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

MiB = 2**20
PY = sys.executable


def _run(code: str, threads: int) -> dict[str, Any]:
    """Run ``code`` in a fresh Python (this checkout first on the path); it prints one JSON line last."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cli(args: list[str], threads: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [
            PY,
            "-c",
            "import sys; from importlib import import_module as m; "
            "mod, fn = sys.argv[1].split(':'); sys.exit(getattr(m(mod), fn)(sys.argv[2:]))",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        raise RuntimeError(f"{args[0]} {' '.join(args[1:4])}...: {proc.stderr[-2000:]}")


# --- part 1: memory of the 54.5B pattern -----------------------------------------------------------------
def synthetic_hf_folder(
    folder: Path, d: int, ffn: int, layers: int, step: int, experts: int, seed: int = 0
) -> dict[str, Any]:
    """nllb-moe-54b's HF layout at width ``d`` / ``ffn``: random bf16 weights, safetensors shards + index."""
    import nllb_fixtures as nf
    import torch
    from safetensors.torch import save_file
    from transformers import NllbMoeConfig, NllbMoeForConditionalGeneration

    if (folder / "config.json").is_file():
        return json.loads((folder / "bench.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    spm = nf.train_spm(folder / "spm")
    config = nf.hf_moe_config(
        nf.hf_vocab_size(spm), d=d, layers=layers, ffn=ffn, heads=max(1, d // 32), experts=experts, step=step
    )
    config["torch_dtype"] = "bfloat16"
    with torch.device("meta"):
        model = NllbMoeForConditionalGeneration(NllbMoeConfig(**config))
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    tied = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
    g = torch.Generator().manual_seed(seed)
    shard, size, n, weight_map = {}, 0, 0, {}
    sizes = {"expert": 0, "dense": 0}

    def flush() -> None:
        nonlocal shard, size, n
        if shard:
            n += 1
            name = f"model-{n:05d}.safetensors"
            save_file(shard, str(folder / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
            shard, size = {}, 0

    for k, shape in shapes.items():
        if k in tied:
            continue
        fan_in = shape[-1]
        t = (torch.randn(shape, generator=g) / fan_in**0.5).to(torch.bfloat16)
        if k.endswith("layer_norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        shard[k] = t
        b = t.numel() * 2
        size += b
        sizes["expert" if ".experts." in k else "dense"] += b
        if size > 200 * MiB:
            flush()
    flush()
    index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    nf.write_tokenizer_files(folder, spm)
    moe_layers = 2 * (layers // step)
    info = {
        "config": {
            k: config[k]
            for k in (
                "d_model",
                "encoder_ffn_dim",
                "encoder_layers",
                "decoder_layers",
                "encoder_sparse_step",
                "num_experts",
                "vocab_size",
            )
        },
        "dense_bytes": sizes["dense"],
        "expert_bytes": sizes["expert"],
        "moe_layers": moe_layers,
        "one_expert_bytes": sizes["expert"] // (moe_layers * experts),
    }
    (folder / "bench.json").write_text(json.dumps(info))
    return info


FLOOR = """
import json, torch
from mt.common import pagemem
from mt.generate.translator import Translator
print(json.dumps({"peak_rss": pagemem.peak_rss()}))
"""

IMPORT = """
import json, time
from pathlib import Path
from mt.common import pagemem
from mt.importing import cli
t = time.perf_counter()
cli.import_model("hf", Path({src!r}), Path({out!r}), dtype=cli.DTYPES["bfloat16"], force=True)
print(json.dumps({{"seconds": time.perf_counter() - t, "peak_rss": pagemem.peak_rss()}}))
"""

TRANSLATE = """
import json, time, torch
from mt.common import pagemem
from mt.generate.translator import Translator
t = time.perf_counter()
tr = Translator({path!r}, bf16={bf16}, expert_cache={k}, threads={threads})
load = time.perf_counter() - t
lines = {lines!r}
t = time.perf_counter()
hyps = tr.translate(lines, "eng_Latn", "deu_Latn", beam=2, max_len_a=0, max_len_b=16)
s = tr.moe.stats()
dense = sum(p.numel() * p.element_size() for n, p in tr.model.named_parameters() if ".experts." not in n)
print(json.dumps({{"load_seconds": load, "translate_seconds": time.perf_counter() - t, "peak_rss": pagemem.peak_rss(),
                  "rss": pagemem.current_rss(), "hit_rate": s["hit_rate"], "resident_bytes": s["resident_bytes"],
                  "mapped_bytes": s["mapped_bytes"], "host_bytes": s["host_bytes"], "dense_param_bytes": dense,
                  "tokens": sum(len(h.ids) for h in hyps)}}))
"""


def part_memory(args: argparse.Namespace) -> dict[str, Any]:
    import nllb_fixtures as nf

    work = Path(args.work) / "memory"
    info = synthetic_hf_folder(work / "hf", args.d, args.ffn, args.layers, args.step, args.experts)
    out = work / "imported"
    floor = _run(FLOOR, args.threads)["peak_rss"]
    imp = _run(IMPORT.format(src=str(work / "hf"), out=str(out)), args.threads)
    lines = [s for _, s in nf.sentences(args.n, seed=5, langs=["eng_Latn"])]
    rows = []
    for k in args.caches:
        r = _run(
            TRANSLATE.format(path=str(out / "checkpoint.pt"), bf16=True, k=k, threads=args.threads, lines=lines),
            args.threads,
        )
        resident = (k or args.experts) * info["moe_layers"] * info["one_expert_bytes"]
        r.update(expert_cache=k, model_bytes=info["dense_bytes"] + resident)
        rows.append(r)
        print(f"expert cache {k}: peak RSS {r['peak_rss'] / MiB:.0f} MiB", file=sys.stderr, flush=True)
    return {"model": info, "floor_rss": floor, "import": imp, "runs": rows, "n": args.n}


def report_memory(res: dict[str, Any]) -> list[str]:
    m, floor = res["model"], res["floor_rss"]
    c = m["config"]
    lines = [
        f"# NLLB-MoE 54.5B layer pattern at reduced width: memory with expert buffering ({res['meta']['cpu']})",
        "",
        f"Synthetic model: {c['encoder_layers']} + {c['decoder_layers']} layers, d {c['d_model']}, ffn "
        f"{c['encoder_ffn_dim']}, {c['num_experts']} experts in every {c['encoder_sparse_step']}th layer "
        f"({m['moe_layers']} MoE layers), bf16: dense part {m['dense_bytes'] / MiB:.1f} MiB, experts "
        f"{m['expert_bytes'] / MiB:.1f} MiB ({m['one_expert_bytes'] / 1024:.0f} KiB each). A process that only "
        f"imports the code peaks at {floor / MiB:.0f} MiB (the floor).",
        "",
        f"mt-import --dtype bfloat16 (HF folder, 12 MoE layers x {c['num_experts']} experts): "
        f"{res['import']['seconds']:.1f} s, peak RSS {res['import']['peak_rss'] / MiB:.0f} MiB "
        f"(+{(res['import']['peak_rss'] - floor) / MiB:.0f} MiB over the floor, for "
        f"{(m['dense_bytes'] + m['expert_bytes']) / MiB:.0f} MiB of weights).",
        "",
        f"Translating {res['n']} sentences eng->deu (beam 2, --bf16), each row a fresh process (times are noisy on a "
        "shared machine; the memory is what this measures):",
        "",
        "| expert cache K | peak RSS MiB | over the floor MiB | dense + K experts/layer MiB | resident expert MiB "
        "| hit rate | load s | translate s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["runs"]:
        k = r["expert_cache"] or "none (default load: all experts in memory)"
        hit = "-" if r["hit_rate"] is None else f"{100 * r['hit_rate']:.0f}%"
        lines.append(
            f"| {k} | {r['peak_rss'] / MiB:.0f} | {(r['peak_rss'] - floor) / MiB:.0f} | "
            f"{r['model_bytes'] / MiB:.0f} | {(r['resident_bytes'] + r['host_bytes']) / MiB:.0f} | {hit} | "
            f"{r['load_seconds']:.1f} | {r['translate_seconds']:.1f} |"
        )
    return lines


# --- part 2: pruning quality vs memory -------------------------------------------------------------------
ENG = "eng_Latn"


def _train(work: Path, args: argparse.Namespace) -> Path:
    """corpus -> spm -> binarized -> mt-train (a few minutes); each step skipped when its output exists."""
    corpus, spm, data, run = work / "corpus", work / "spm", work / "data-bin", work / "model"
    if not (corpus / "stats.tsv").is_file():
        _cli(
            [
                "mt.data.cli:data_main",
                "build",
                "gettext",
                "--out",
                str(corpus),
                "--langs",
                ",".join(args.langs),
                "--dev-size",
                str(args.dev_size),
                "--devtest-size",
                str(args.devtest_size),
                "--mono-size",
                "0",
                "--max-words",
                str(args.max_words),
                "--no-progress-bar",
                "--workers",
                "1",
            ],
            args.threads,
        )
    if not (spm / "spm.model").is_file():
        _cli(
            [
                "mt.data.cli:spm_main",
                "train",
                "--corpus",
                str(corpus),
                "--vocab-size",
                "2000",
                "--out",
                str(spm),
                "--threads",
                str(args.threads),
                "--no-progress-bar",
            ],
            args.threads,
        )
    for lang in args.langs:
        if not (data / f"test.{ENG}-{lang}.{lang}.idx").is_file():
            _cli(
                [
                    "mt.data.cli:preprocess_main",
                    "--source-lang",
                    ENG,
                    "--target-lang",
                    lang,
                    "--trainpref",
                    str(corpus / "train" / f"{ENG}-{lang}"),
                    "--validpref",
                    str(corpus / "dev"),
                    "--testpref",
                    str(corpus / "devtest"),
                    "--spm-model",
                    str(spm / "spm.model"),
                    "--srcdict",
                    str(spm / "dict.txt"),
                    "--joined-dictionary",
                    "--destdir",
                    str(data),
                ],
                args.threads,
            )
    (data / "spm.model").write_bytes((spm / "spm.model").read_bytes())
    ckpt = run / "checkpoint_last.pt"
    if not ckpt.is_file():
        pairs = ",".join(f"{a}-{b}" for lang in args.langs for a, b in ((ENG, lang), (lang, ENG)))
        t = time.perf_counter()
        _cli(
            [
                "mt.train.cli:train_main",
                str(data),
                "--lang-pairs",
                pairs,
                "--arch",
                "transformer_mini",
                "--moe-freq",
                "1",
                "--moe-expert-count",
                str(args.experts_trained),
                "--moe-eom",
                "0.1",
                "--sampling-temperature",
                "5",
                "--lr",
                "0.005",
                "--warmup-updates",
                "100",
                "--max-tokens",
                str(args.max_tokens),
                "--max-update",
                str(args.max_update),
                "--save-dir",
                str(run),
                "--no-epoch-checkpoints",
                "--log-interval",
                "100",
                "--no-progress-bar",
            ],
            args.threads,
        )
        (run / "train_seconds.txt").write_text(f"{time.perf_counter() - t:.0f}\n")
    return ckpt


def _chrf(path: Path, src: str, tgt: str, lines: list[str], refs: list[str], threads: int) -> float:
    import sacrebleu

    from mt.generate.translator import Translator

    tr = Translator(path, threads=threads)
    hyps = [h.text for h in tr.translate(lines, src, tgt, beam=1)]
    return sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score


def _expert_bytes(path: Path) -> tuple[int, int]:
    """(expert bytes, all parameter bytes) of a checkpoint (its expert files included)."""
    from mt.formats import checkpoint as ckpt

    state = ckpt.load_checkpoint(path, mmap=True)
    views, _ = ckpt.expert_views(path, state)
    experts = sum(t.numel() * t.element_size() for ts in views.values() for t in ts)
    dense = sum(t.numel() * t.element_size() for t in state["model"].values())
    return experts, experts + dense


def part_pruning(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from mt.generate.moe_prune import PruneConfig, prune
    from mt.generate.moe_stats import MoEStatsConfig, moe_stats
    from mt.generate.search import SearchConfig

    torch.set_num_threads(args.threads)
    work = Path(args.work) / "pruning"
    ckpt = _train(work, args)
    corpus = work / "corpus"
    experts, total = _expert_bytes(ckpt)
    E = args.experts_trained
    rows = []
    for src, tgt in [(a, b) for lang in args.langs for a, b in ((ENG, lang), (lang, ENG))]:
        direction = f"{src}-{tgt}"
        dev = corpus / "dev" / f"{src}.dev"
        stats = work / "stats" / f"{direction}.json"
        stats.parent.mkdir(parents=True, exist_ok=True)
        if not stats.is_file():
            moe_stats(
                MoEStatsConfig(
                    path=str(ckpt),
                    input=str(dev),
                    src_lang=src,
                    tgt_langs=[tgt],
                    out=str(stats),
                    search=SearchConfig(beam=1),
                    progress=False,
                )
            )
        test = (corpus / "devtest" / f"{src}.devtest").read_text(encoding="utf-8").splitlines()
        refs = (corpus / "devtest" / f"{tgt}.devtest").read_text(encoding="utf-8").splitlines()
        row: dict[str, Any] = {"direction": direction, "full": _chrf(ckpt, src, tgt, test, refs, args.threads)}
        for share in args.keep:
            for how in ("stats", "random"):
                out = work / "pruned" / f"{direction}-{how}-{share}"
                st = stats if how == "stats" else _random_stats(stats, work / "stats" / f"{direction}-random.json")
                if not (out / "checkpoint.pt").is_file():
                    prune(PruneConfig(path=str(ckpt), stats=[str(st)], out=str(out), keep_share=share, force=True))
                row[f"{how}@{share}"] = _chrf(out / "checkpoint.pt", src, tgt, test, refs, args.threads)
                if how == "stats":
                    row[f"bytes@{share}"] = _expert_bytes(out / "checkpoint.pt")
                    row[f"kept@{share}"] = PruneConfig(stats=["x"], keep_share=share).kept(E)
        rows.append(row)
        print(
            f"{direction}: " + ", ".join(f"{k} {v:.1f}" for k, v in row.items() if isinstance(v, float)),
            file=sys.stderr,
            flush=True,
        )
    secs = work / "model" / "train_seconds.txt"
    return {
        "experts": E,
        "expert_bytes": experts,
        "total_bytes": total,
        "rows": rows,
        "keep": args.keep,
        "max_update": args.max_update,
        "train_seconds": float(secs.read_text()) if secs.is_file() else None,
        "devtest": args.devtest_size,
        "max_words": args.max_words,
    }


def _random_stats(stats: Path, out: Path) -> Path:
    """The statistics with each layer's counts shuffled: pruning then keeps experts chosen at random."""
    data = json.loads(stats.read_text())
    rng = random.Random(0)
    for layer in data["layers"].values():
        for key in ("assignments", "first"):
            rng.shuffle(layer[key])
    out.write_text(json.dumps(data))
    return out


def report_pruning(res: dict[str, Any]) -> list[str]:
    E, keep = res["experts"], res["keep"]
    kept = {k: res["rows"][0][f"kept@{k}"] for k in keep}
    lines = [
        f"# Language-specific expert pruning: chrF++ vs memory ({res['meta']['cpu']})",
        "",
        f"transformer_mini with {E} experts in every layer (3 + 3 MoE layers), trained {res['max_update']} updates "
        f"({res['train_seconds'] or '?'} s on {res['meta']['threads']} thread(s)) on the gettext corpus (English "
        f"sides of at most {res['max_words']} words), {len(res['rows'])} directions; "
        f"experts {res['expert_bytes'] / MiB:.1f} of {res['total_bytes'] / MiB:.1f} MiB. Per direction: mt-moe-stats "
        f"on its dev set, mt-moe-prune, greedy chrF++ on {res['devtest']} devtest sentences. 'random': as many "
        "experts kept, chosen at random.",
        "",
        "| direction | full | "
        + " | ".join(f"{100 - round(100 * k)}% removed ({kept[k]}/{E} kept) | random" for k in keep)
        + " |",
        "|---|---|" + "---|---|" * len(keep),
    ]
    for r in res["rows"]:
        cells = [f"{r[f'stats@{k}']:.1f} | {r[f'random@{k}']:.1f}" for k in keep]
        lines.append(f"| {r['direction']} | {r['full']:.1f} | " + " | ".join(cells) + " |")
    rows = res["rows"]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if isinstance(rows[0][k], float)}
    cells = [f"{mean[f'stats@{k}']:.1f} | {mean[f'random@{k}']:.1f}" for k in keep]
    lines.append(f"| mean | {mean['full']:.1f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| | full | " + " | ".join(f"{100 - round(100 * k)}% removed" for k in keep) + " |",
        "|---|---|" + "---|" * len(keep),
    ]
    b = rows[0]
    for i, (what, full) in enumerate((("expert MiB", res["expert_bytes"]), ("model MiB", res["total_bytes"]))):
        lines.append(
            f"| {what} | {full / MiB:.2f} | " + " | ".join(f"{b[f'bytes@{k}'][i] / MiB:.2f}" for k in keep) + " |"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["memory", "pruning"], required=True)
    p.add_argument("--work", default="/tmp/nllb-moe-bench")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "bench" / "out"))
    g = p.add_argument_group("memory")
    g.add_argument("--d", type=int, default=128)
    g.add_argument("--ffn", type=int, default=1024)
    g.add_argument("--layers", type=int, default=24)
    g.add_argument("--step", type=int, default=4)
    g.add_argument("--experts", type=int, default=128)
    g.add_argument("--caches", default="4,16,128,0", help="expert cache sizes; 0: no cache (all experts in memory)")
    g.add_argument("--n", type=int, default=16, help="sentences translated per run")
    g = p.add_argument_group("pruning")
    g.add_argument("--langs", default="deu_Latn,fra_Latn", help="languages paired with English (both directions)")
    g.add_argument("--max-words", type=int, default=8, help="corpus: English sides of at most this many words")
    g.add_argument("--max-tokens", type=int, default=1024)
    g.add_argument("--max-update", type=int, default=900)
    g.add_argument("--experts-trained", type=int, default=8)
    g.add_argument("--keep", default="0.75,0.5,0.2", help="shares of the experts kept")
    g.add_argument("--dev-size", type=int, default=100)
    g.add_argument("--devtest-size", type=int, default=150)
    args = p.parse_args()
    args.caches = [int(x) for x in args.caches.split(",")]
    args.keep = [float(x) for x in args.keep.split(",")]
    args.langs = [x for x in args.langs.split(",") if x]
    meta = {
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "python": platform.python_version(),
    }
    res = part_memory(args) if args.part == "memory" else part_pruning(args)
    res["meta"] = meta
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"nllb_moe_{args.part}.json").write_text(json.dumps(res, indent=1))
    lines = report_memory(res) if args.part == "memory" else report_pruning(res)
    (out / f"nllb_moe_{args.part}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
