"""MoE inference (Huang et al. 2023, arXiv 2303.06182): static vs dynamic gating, and expert buffering with
K = E, E/2, E/4, 1 resident experts per MoE layer (the others memory-mapped from the checkpoint).

Per row: sentences/s and generated tokens/s, peak RSS of the process, expert memory (bytes of expert
weights resident: cache slots + memory-mapped checkpoint pages mapped into the process + weights held
besides the slots; see ``mt.generate.moe_inference``), cache hit rate and bytes brought in, and the share
of translations identical to the dynamic-gating row. Every row runs in a fresh process (peak RSS is per
process) on the same inference-only copy of the checkpoint (no optimizer state, so loading costs the
same in every row), after a short warm-up that is not timed.

    # final numbers (a quiet machine): the demo MoE model (16 experts, every 2nd layer), 4 directions
    python bench/moe_inference.py --path work/demo/moe16/checkpoint_last.pt --data work/demo/data-bin \\
        --lang-pairs eng_Latn-deu_Latn,deu_Latn-eng_Latn,eng_Latn-hin_Deva,hin_Deva-eng_Latn --n 300 --threads 2
    # without a trained model: random weights with skewed (Zipf-like) routing
    python bench/moe_inference.py --random-arch transformer_small --experts 16 --moe-freq 2 --data work/demo/data-bin

Writes ``bench/out/moe_inference.{md,json}``. Measures, never asserts. CPU only here; the same code runs
with ``--device cuda`` (cold experts then in pinned host memory, ``--offload host``), untested.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mt.data.dictionary import Dictionary  # noqa: E402
from mt.data.pair_dataset import load_direction  # noqa: E402
from mt.formats import checkpoint as ckpt  # noqa: E402
from mt.models.config import arch_config  # noqa: E402
from mt.models.moe import moe_layers  # noqa: E402
from mt.models.transformer import build_model  # noqa: E402


# --- the model -----------------------------------------------------------------------------------------
def inference_copy(path: Path, out: Path) -> Path:
    """The checkpoint without optimizer state and RNG (all experts in one file): what a deployment ships."""
    state = ckpt.load_checkpoint(path)
    keep = {k: v for k, v in state.items() if k not in ("optimizer", "rng", "data_state")}
    if keep.get("moe"):
        keep["moe"] = {"shards": 1, "expert_keys": keep["moe"]["expert_keys"], "expert_param_ids": []}
    target = out / "bench-model.pt"
    ckpt.save_checkpoint(keep, target)
    return target


def random_moe_checkpoint(
    arch: str, experts: int, moe_freq: int, data: Path, out: Path, skew: float, seed: int = 0
) -> Path:
    """Random weights; each MoE layer's gate gets a per-expert bias ``skew * log(1 / rank^1.1)`` (through
    the LayerNorm bias the gate sees) so routing is Zipf-like, as trained routers are, instead of uniform."""
    d = Dictionary.load(data / "dict.txt")
    cfg = arch_config(
        arch,
        vocab_size=len(d),
        padding_idx=d.pad(),
        langs=d.langs(),
        dropout=0.0,
        moe_freq=moe_freq,
        moe_expert_count=experts,
        moe_second_expert_policy="all",
    )
    torch.manual_seed(seed)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        ln = model.decoder.layer_norm.weight
        ln.copy_(torch.randn(ln.shape, generator=g) * 2.0)
        for stack in (model.encoder, model.decoder):
            for layer in stack.layers:
                if layer.ffn in moe_layers(model):
                    u = torch.randn(cfg.encoder_embed_dim, generator=g)
                    u /= u.norm()
                    layer.final_layer_norm.bias.copy_(u)  # the gate sees LN(x) = ... + u
                    bias = skew * torch.log(1.0 / torch.arange(1, experts + 1).float() ** 1.1)
                    bias = bias[torch.randperm(experts, generator=g)]
                    w = layer.ffn.wg.weight
                    w.sub_(torch.outer(w @ u, u)).add_(torch.outer(bias, u))  # w_e . u = bias_e
    state = ckpt.weights_state(cfg.to_dict(), model.state_dict(), d.checksum(), {"data": str(data)})
    target = out / "bench-model.pt"
    ckpt.save_checkpoint(state, target)
    return target


def sources(data: Path, subset: str, pairs: list[str], n: int) -> dict[str, list[list[int]]]:
    d = Dictionary.load(data / "dict.txt")
    out = {}
    for pair in pairs:
        ds = load_direction(data, subset, pair, d, d.langs())
        out[pair] = [ds.src[i].tolist()[:-1] for i in range(min(n, len(ds)))]  # binarized rows end with </s>
    return out


# --- one row (in its own process) --------------------------------------------------------------------------
def run_one(spec: dict) -> dict:
    from mt.common import pagemem
    from mt.generate.search import SearchConfig
    from mt.generate.translator import Translator
    from mt.models.moe import set_inference_gating

    torch.set_num_threads(spec["threads"])
    t0 = time.perf_counter()
    tr = Translator(
        spec["ckpt"],
        spec["device"],
        spec["bf16"],
        data=spec["data"],
        moe_gating=spec["gating"],
        expert_cache=spec["cache"],
        expert_offload=spec["offload"],
    )
    if spec["gating"] == "static":
        set_inference_gating(tr.model, "static", None, spec["static_dispatch"])
    load_s = time.perf_counter() - t0
    rss_loaded = pagemem.current_rss()
    cfg = SearchConfig(beam=spec["beam"])
    srcs = sources(Path(spec["data"]), spec["subset"], spec["pairs"], spec["n"])
    for pair, ids in srcs.items():  # warm-up: not timed, not counted
        s, t = pair.split("-")
        tr.translate_ids(ids[:8], s, t, cfg, spec["max_tokens"])
    if tr.moe is not None:
        tr.moe.reset_stats()
    hyps, ntok, n = {}, 0, 0
    c0, t0 = time.process_time(), time.perf_counter()
    for pair, ids in srcs.items():
        s, t = pair.split("-")
        out = tr.translate_ids(ids, s, t, cfg, spec["max_tokens"])
        hyps[pair] = [h[0].tokens for h in out]
        ntok += sum(len(h[0].tokens) + 1 for h in out)
        n += len(ids)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    stats = tr.moe_stats() or {}
    stats.pop("layers", None)
    return {
        "row": spec["row"],
        "sentences": n,
        "tokens": ntok,
        "seconds": secs,
        "cpu_seconds": cpu,
        "sent_per_s": n / secs,
        "sent_per_cpu_s": n / cpu,
        "tok_per_s": ntok / secs,
        "load_seconds": load_s,
        "rss_after_load": rss_loaded,
        "rss_end": pagemem.current_rss(),
        "peak_rss": pagemem.peak_rss(),
        "moe": stats,
        "hyps": hyps,
    }


# --- the table ----------------------------------------------------------------------------------------------
def _mb(n) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def markdown(rows: list[dict], meta: dict) -> str:
    base = next(r for r in rows if r["row"] == "dynamic")
    static = next((r for r in rows if r["row"].startswith("static (einsum")), None)
    ref_mem = base["moe"]["expert_memory_bytes"]
    lines = [
        f"# MoE inference: gating and expert buffering ({meta['model']})",
        "",
        f"{meta['sentences']} sentences ({', '.join(meta['pairs'])}), beam {meta['beam']}, --max-tokens "
        f"{meta['max_tokens']}, {meta['threads']} thread(s), {'bf16' if meta['bf16'] else 'fp32'}, {meta['device']}; "
        f"{meta['experts']} experts in each of {meta['moe_layers']} MoE layers; fastest of {meta['repeat']} run(s) per "
        f"row, each in a fresh process; {meta['machine']}.",
        "",
        "| setting | sentences/s | sentences/CPU-s | speed vs static (wall, CPU) | peak RSS MB | expert memory MB "
        "| vs dynamic | hit rate | brought in MB | bringing-in s | same output |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r["moe"]
        same = sum(a == b for p in base["hyps"] for a, b in zip(r["hyps"][p], base["hyps"][p])) / max(
            base["sentences"], 1
        )
        cached = bool(m.get("expert_cache"))
        rate = f"{100 * m['hit_rate']:.1f}%" if cached and m.get("hit_rate") is not None else "-"
        vs = (
            f"{r['sent_per_s'] / static['sent_per_s']:.2f}x, {r['sent_per_cpu_s'] / static['sent_per_cpu_s']:.2f}x"
            if static
            else "-"
        )
        brought = _mb(m.get("loaded_bytes")) if cached else "-"
        bringing = f"{m.get('load_seconds', 0.0):.2f}" if cached else "-"
        lines.append(
            f"| {r['row']} | {r['sent_per_s']:.2f} | {r['sent_per_cpu_s']:.2f} | {vs} | {_mb(r['peak_rss'])} | "
            f"{_mb(m.get('expert_memory_bytes'))} | {m.get('expert_memory_bytes', 0) / ref_mem:.2f}x | {rate} | "
            f"{brought} | {bringing} | {100 * same:.0f}% |"
        )
    lines += [
        "",
        "Static gating is the fairseq / GShard baseline: capacity = ceil(1.0 x tokens) (nothing dropped), every expert "
        "runs on all its capacity slots; 'einsum' builds the one-hot (tokens x experts x capacity) dispatch and "
        "combine tensors as fairseq does, 'index' fills the same padded buffer by indexing. Dynamic gating runs each "
        "expert on exactly its tokens. Expert memory = cache slots (compute dtype) + checkpoint pages mapped into the "
        "process (pagemap; dropped after each load) + expert weights held besides the slots (the fp32 originals when "
        "bf16 copies are made). Cache rows bring experts in from the memory-mapped checkpoint; the page cache was "
        "warm, so 'bringing in' is a copy from RAM, not a disk read. Peak RSS includes the model load (the "
        "non-cache rows read the whole inference checkpoint; the cache rows map it).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default="", help="trained MoE checkpoint (default: random weights, see --random-arch)")
    p.add_argument("--data", required=True, help="binarized data dir (dict.txt, {subset}.* files)")
    p.add_argument("--random-arch", default="transformer_small")
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--moe-freq", type=int, default=2)
    p.add_argument("--skew", type=float, default=3.0, help="random model: strength of the Zipf-like gate bias")
    p.add_argument("--lang-pairs", default="eng_Latn-deu_Latn,deu_Latn-eng_Latn,eng_Latn-hin_Deva,hin_Deva-eng_Latn")
    p.add_argument("--subset", default="test")
    p.add_argument("--n", type=int, default=50, help="sentences per direction")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--offload", default="auto", choices=["auto", "host", "mmap"], help="cold experts of the cache rows")
    p.add_argument(
        "--rows",
        default="",
        help="comma-separated subset of rows: static-einsum, static-index, dynamic, "
        "cacheK (K = E, E/2, E/4, 1; e.g. cache4) (default: all)",
    )
    p.add_argument("--repeat", type=int, default=1, help="run each row R times (fresh processes), keep the fastest")
    p.add_argument("--out", default=str(REPO / "bench" / "out"))
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0

    out = Path(args.out)
    work = out / "moe_work"
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    if args.path:
        model_path, model_desc = inference_copy(Path(args.path), work), f"trained: {args.path}"
    else:
        model_path = random_moe_checkpoint(args.random_arch, args.experts, args.moe_freq, data, work, args.skew)
        model_desc = f"random {args.random_arch}, Zipf-skewed gates (skew {args.skew})"
    cfg = ckpt.load_checkpoint(model_path)["model_config"]
    E = int(cfg["moe_expert_count"])
    n_moe = sum((i + 1) % cfg["moe_freq"] == 0 for i in range(cfg["encoder_layers"])) + sum(
        (i + 1) % cfg["moe_freq"] == 0 for i in range(cfg["decoder_layers"])
    )
    specs = [
        ("static-einsum", "static (einsum, fairseq)", "static", 0, "einsum"),
        ("static-index", "static (index)", "static", 0, "index"),
        ("dynamic", "dynamic", "dynamic", 0, ""),
    ]
    for k in sorted({E, E // 2, E // 4, 1}, reverse=True):
        specs.append((f"cache{k}", f"dynamic, expert cache K={k}", "dynamic", k, ""))
    wanted = [r for r in args.rows.split(",") if r]
    unknown = set(wanted) - {s[0] for s in specs}
    if unknown:
        p.error(f"--rows: unknown {', '.join(sorted(unknown))}; choose from {', '.join(s[0] for s in specs)}")
    pairs = [x for x in args.lang_pairs.split(",") if x]
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    for key, name, gating, cache, dispatch in specs:
        if wanted and key not in wanted and key != "dynamic":  # the dynamic row is the reference
            continue
        spec = {
            "row": name,
            "ckpt": str(model_path),
            "data": str(data),
            "device": args.device,
            "bf16": args.bf16,
            "gating": gating,
            "static_dispatch": dispatch,
            "cache": cache,
            "offload": args.offload,
            "threads": args.threads,
            "beam": args.beam,
            "subset": args.subset,
            "pairs": pairs,
            "n": args.n,
            "max_tokens": args.max_tokens,
        }
        row = None
        for _ in range(max(args.repeat, 1)):
            res = subprocess.run(
                [sys.executable, __file__, "--data", str(data), "--one", json.dumps(spec)],
                capture_output=True,
                text=True,
                env=env,
            )
            if res.returncode:
                print(res.stderr[-3000:], file=sys.stderr)
                return 1
            got = json.loads(res.stdout.strip().splitlines()[-1])
            if row is None or got["sent_per_s"] > row["sent_per_s"]:
                row = got
        m = row["moe"]
        print(
            f"{name:32s} {row['sent_per_s']:7.2f} sent/s  peak RSS {_mb(row['peak_rss'])} MB  expert memory "
            f"{_mb(m.get('expert_memory_bytes'))} MB  hit rate {m.get('hit_rate')}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    meta = {
        "model": model_desc,
        "pairs": pairs,
        "sentences": rows[0]["sentences"],
        "beam": args.beam,
        "max_tokens": args.max_tokens,
        "threads": args.threads,
        "bf16": args.bf16,
        "device": args.device,
        "experts": E,
        "moe_layers": n_moe,
        "repeat": args.repeat,
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
    }
    (out / "moe_inference.md").write_text(markdown(rows, meta), encoding="utf-8")
    for r in rows:
        r.pop("hyps")
    (out / "moe_inference.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1), encoding="utf-8")
    print((out / "moe_inference.md").read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
