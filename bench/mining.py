"""Benchmark of the mining stages: embed (optional encoder), k-NN (FAISS) and margin scoring.

Measures, per size N (vectors per side) and per index type:
  - time and throughput of index training, filling, k-NN search both ways, margin mining (max mode);
  - margin time as a share of the k-NN search time (target: <= 10%);
  - peak RSS of the process doing the work (each configuration runs in its own child process);
  - recall@k of the index against exact search (sampled queries, brute force in float64),
    and how well the planted "translation" pairs are recovered (best-F1 of the mined pairs);
  - the scaling of time with N (log-log slope per index family: ~1 means linear).

Data: synthetic, D-dimensional, a mixture of Gaussians (shared cluster centres on both sides) with
every ``--plant-every``-th target row a noisy copy of the same source row (cosine ~0.8): those pairs are
the "translations". Written as fp16 shards through ``mining.embedding_store`` and streamed like real ones.

    python bench/mining.py --sizes 10000,100000                       # quick check
    python bench/mining.py --sizes 10000,100000,1000000 --threads 16  # the full run
    python bench/mining.py --sizes 10000 --encoder ngram              # + encoder throughput

Writes bench/out/mining.json, bench/out/mining.md (and mining_scaling.png) and prints the table.
Benchmarks measure; they never assert.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mining.embedding_store import EmbeddingSet, write_meta, write_shard  # noqa: E402

GIB = 1024**3


def peak_rss_bytes() -> int:
    """Peak RSS of this process image. VmHWM, not getrusage: Linux carries ru_maxrss over fork + exec, so a
    child would report its parent's peak (here: the data generator's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# --------------------------------------------------------------------------------------------------
# synthetic data


def generate(
    prefix_dir: Path,
    n: int,
    dim: int,
    clusters: int,
    plant_every: int,
    seed: int,
    shard_rows: int = 65_536,
    spread: float = 1.0,
    noise: float = 0.75,
) -> tuple[Path, Path]:
    """Write ``src`` and ``tgt`` embedding sets of ``n`` rows; planted pairs are (i, i), i % plant_every == 0."""
    src, tgt = prefix_dir / "src", prefix_dir / "tgt"
    if (prefix_dir / "tgt.meta.json").is_file() and (prefix_dir / "src.meta.json").is_file():
        return src, tgt
    prefix_dir.mkdir(parents=True, exist_ok=True)
    centres = np.random.default_rng(seed).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scale = np.float32(spread / math.sqrt(dim))
    shards = []
    for k, lo in enumerate(range(0, n, shard_rows)):
        rows = min(shard_rows, n - lo)
        rng = np.random.default_rng([seed, k])
        x = centres[rng.integers(0, clusters, rows)] + scale * rng.standard_normal((rows, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y = centres[rng.integers(0, clusters, rows)] + scale * rng.standard_normal((rows, dim), dtype=np.float32)
        planted = np.flatnonzero((lo + np.arange(rows)) % plant_every == 0)
        y[planted] = x[planted] + np.float32(noise / math.sqrt(dim)) * rng.standard_normal(
            (planted.size, dim), dtype=np.float32
        )
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        write_shard(src, k, x)
        write_shard(tgt, k, y)
        shards.append({"file": None, "rows": rows, "start": lo})
        del x, y
    for p in (src, tgt):
        write_meta(
            p,
            dim,
            [{**s, "file": f"{p.name}.{k:04d}.npy"} for k, s in enumerate(shards)],
            encoder="synthetic",
            lang=p.name,
        )
    return src, tgt


def exact_topk(src: Path, tgt: Path, k: int, sample: int, seed: int) -> dict:
    """Exact top-k (float64) of ``sample`` random source rows against all target rows, streamed."""
    es, et = EmbeddingSet.open(src), EmbeddingSet.open(tgt)
    rows = np.sort(np.random.default_rng(seed).choice(len(es), size=min(sample, len(es)), replace=False))
    q = np.concatenate([a[rows[(rows >= s) & (rows < s + a.shape[0])] - s] for s, a in es.shards()]).astype(np.float64)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    best_s = np.full((q.shape[0], k), -np.inf)
    best_i = np.full((q.shape[0], k), -1, dtype=np.int64)
    for start, arr in et.shards():
        db = np.asarray(arr, dtype=np.float64)
        db /= np.linalg.norm(db, axis=1, keepdims=True)
        s = q @ db.T
        part = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
        cs = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        ci = np.concatenate([best_i, part + start], axis=1)
        order = np.argsort(-cs, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cs, order, axis=1), np.take_along_axis(ci, order, axis=1)
    return {"rows": rows, "ids": best_i, "sims": best_s}


# --------------------------------------------------------------------------------------------------
# one configuration (runs in a child process so its peak RSS is its own)


def child(args: dict) -> dict:
    import faiss

    from mining.index import IndexConfig, build_index, save_index
    from mining.knn import KnnConfig, KnnSet, knn_search
    from mining.margin import MarginConfig, mine

    if args["threads"]:
        faiss.omp_set_num_threads(args["threads"])
    work = Path(args["work"])
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    src, tgt, n, k = Path(args["src"]), Path(args["tgt"]), args["n"], args["k"]
    icfg = IndexConfig(factory=args["factory"], train_sample=args["train_sample"], threads=args["threads"])
    kcfg = KnnConfig(k=k, nprobe=args["nprobe"], threads=args["threads"])
    res = {"n": n, "factory": args["factory"], "nprobe": args["nprobe"], "k": k, "threads": faiss.omp_get_max_threads()}
    train_s = add_s = search_s = 0.0
    for direction, q, db in (("src2tgt", src, tgt), ("tgt2src", tgt, src)):
        t = {}
        index = build_index(EmbeddingSet.open(db), icfg, progress=False, timings=t)
        train_s += t["train_s"]
        add_s += t["add_s"]
        ipath = save_index(index, work / f"{db.name}.faiss")
        res["index_bytes"] = ipath.stat().st_size
        del index
        t0 = time.time()
        knn_search(ipath, q, work / direction, kcfg, progress=False)
        search_s += time.time() - t0
        from mining import knn as _knn_mod

        _knn_mod._INDEX_CACHE.clear()
    res.update(train_s=train_s, add_s=add_s, search_s=search_s, knn_qps=2 * n / search_s)
    fwd, bwd = KnnSet.open(work / "src2tgt"), KnnSet.open(work / "tgt2src")
    t0 = time.time()
    al = mine(fwd, bwd, MarginConfig(margin="ratio", mode="max", k=k, threshold=float("-inf")))
    res["margin_s"] = time.time() - t0
    res["margin_share_of_search"] = res["margin_s"] / search_s
    res["margin_share_of_knn_total"] = res["margin_s"] / (search_s + train_s + add_s)
    # recall@k of this index against exact search, on the sampled queries
    gt = np.load(args["gt"])
    rows = gt["rows"]
    got = np.empty((rows.size, k), dtype=np.int64)
    for start, ids, _ in fwd.shards():
        m = (rows >= start) & (rows < start + ids.shape[0])
        got[m] = ids[rows[m] - start]
    exact = gt["ids"][:, :k]
    res["recall_at_k"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), exact.tolist())]))
    res["recall_at_1"] = float((got[:, 0] == exact[:, 0]).mean())
    # planted translation pairs: best F1 of the mined pairs (sorted by score) against them
    is_gold = (al.src == al.tgt) & (al.src % args["plant_every"] == 0)
    n_gold = (n + args["plant_every"] - 1) // args["plant_every"]
    correct = np.cumsum(is_gold)
    prec = correct / np.arange(1, len(al) + 1)
    rec = correct / n_gold
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.maximum(prec + rec, 1e-12), 0)
    b = int(f1.argmax()) if len(al) else 0
    res["planted"] = {
        "best_f1": float(f1[b]) if len(al) else 0.0,
        "precision": float(prec[b]) if len(al) else 0.0,
        "recall": float(rec[b]) if len(al) else 0.0,
        "threshold": float(al.scores[b]) if len(al) else None,
        "in_topk": float(
            np.mean([r in ids for r, ids in zip(rows.tolist(), got.tolist()) if r % args["plant_every"] == 0] or [0.0])
        ),
    }
    res["peak_rss_bytes"] = peak_rss_bytes()
    shutil.rmtree(work, ignore_errors=True)
    return res


def embed_child(args: dict) -> dict:
    from mining import bucc
    from mining.embed import embed_file
    from mining.encoders import load_encoder

    sents = bucc.english_pool()
    m = args["sentences"]
    sents = (sents * (m // max(1, len(sents)) + 1))[:m]
    enc = load_encoder(args["encoder"])
    enc.encode(sents[:8], "eng_Latn")  # warm-up (model load, first-call overheads)
    work = Path(args["work"])
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "eng.txt").write_text("".join(f"{s}\n" for s in sents), encoding="utf-8")
    t0 = time.time()  # what mine-embed does: read, length-sort, encode, write fp16 shards and meta
    embed_file(work / "eng.txt", work / "eng", "eng_Latn", enc, batch_size=args["batch_size"], progress=False)
    dt = time.time() - t0
    shutil.rmtree(work, ignore_errors=True)
    return {
        "encoder": args["encoder"],
        "sentences": m,
        "seconds": dt,
        "sent_per_s": m / dt,
        "peak_rss_bytes": peak_rss_bytes(),
    }


def run_child(kind: str, args: dict, timeout: int | None = None) -> dict:
    out = Path(args["work"]).with_suffix(".result.json")
    cmd = [sys.executable, __file__, "--child", kind, json.dumps(args), str(out)]
    t0 = time.time()
    proc = subprocess.run(cmd, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        return {"error": f"child exited with {proc.returncode}", **{k: args.get(k) for k in ("n", "factory")}}
    res = json.loads(out.read_text())
    res["wall_s"] = time.time() - t0
    out.unlink()
    return res


# --------------------------------------------------------------------------------------------------
# driver


def auto_nlist(n: int) -> int:
    """A power of two near 4 * sqrt(n) (FAISS's guideline is 4-16 x sqrt(n) lists)."""
    return int(2 ** round(math.log2(max(16, 4 * math.sqrt(n)))))


def linear_nlist(n: int, rows_per_list: int) -> int:
    """A power of two near n / rows_per_list: lists of constant size, so a query scans the same number of
    codes at every N (with an HNSW coarse quantizer finding the lists in ~log(nlist))."""
    return int(2 ** round(math.log2(max(4, n / rows_per_list))))


def factories_for(
    n: int,
    dim: int,
    names: list[str],
    flat_max: int,
    ivf_flat_max_gib: float,
    pq_m: int,
    nlist: int | None = None,
    rows_per_list: int = 512,
) -> list[tuple[str, str | None]]:
    """(factory, reason skipped or None) for each family at size n."""
    out = []
    nl = nlist or auto_nlist(n)
    for name in names:
        if name == "Flat":
            out.append(("Flat", None if n <= flat_max else f"n > --flat-max {flat_max}"))
        elif name == "IVF,Flat":
            too_big = n * dim * 4 / GIB > ivf_flat_max_gib
            out.append((f"IVF{nl},Flat", f"index would take {n * dim * 4 / GIB:.1f} GiB" if too_big else None))
        elif name == "IVF,SQ8":
            out.append((f"IVF{nl},SQ8", None))
        elif name == "IVF,PQ":
            out.append((f"IVF{nl},PQ{pq_m}", None))
        elif name == "OPQ,IVF,PQ":
            out.append((f"OPQ{pq_m},IVF{nl},PQ{pq_m}", None))
        elif name in ("IVF_HNSW,PQ", "IVF_HNSW,SQ8"):
            codes = name.split(",")[1].replace("PQ", f"PQ{pq_m}")
            out.append((f"IVF{linear_nlist(n, rows_per_list)}_HNSW32,{codes}", None))
        else:
            out.append((name, None))
    return out


def family(factory: str) -> str:
    """'IVF1024,PQ64' -> 'IVF,PQ', 'IVF2048_HNSW32,PQ64' -> 'IVF_HNSW,PQ': the same family across sizes."""
    import re

    return re.sub(r"\d+", "", factory)


def slope(points: list[tuple[int, float]]) -> float | None:
    pts = [(math.log(n), math.log(t)) for n, t in points if t > 0]
    if len(pts) < 2:
        return None
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    return float(np.polyfit(xs, ys, 1)[0])


def markdown(report: dict) -> str:
    lines = [
        f"# Mining benchmark ({report['machine']})",
        "",
        f"dim {report['dim']}, k {report['k']}, nprobe {report['nprobe']}, nlist {report['nlist']}, "
        f"faiss threads per run in the table, "
        f"planted pairs every {report['plant_every']} rows. Times in seconds; k-NN = search both directions.",
        "",
        "| N | index | threads | train | add | k-NN search | queries/s | margin | margin / k-NN | recall@k vs exact "
        "| recall@1 | planted in top-k | planted F1 | index MB | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["runs"]:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['n']} | {r['factory']} | | {r.get('skipped') or r.get('error')} ||||||||||||")
            continue
        lines.append(
            f"| {r['n']} | {r['factory']} | {r.get('threads', '')} | {r['train_s']:.1f} | {r['add_s']:.1f} | "
            f"{r['search_s']:.1f} | "
            f"{r['knn_qps']:.0f} | {r['margin_s']:.2f} | {100 * r['margin_share_of_search']:.1f}% | "
            f"{r['recall_at_k']:.3f} | {r['recall_at_1']:.3f} | {r['planted']['in_topk']:.3f} | "
            f"{r['planted']['best_f1']:.3f} | "
            f"{r['index_bytes'] / 2**20:.1f} | {r['peak_rss_bytes'] / GIB:.2f} |"
        )
    if report.get("scaling"):
        lines += [
            "",
            "Scaling (log-log slope of time vs N; 1 = linear, 2 = quadratic):",
            "",
            "| index family | sizes | k-NN search slope | total (train+add+search) slope |",
            "|---|---|---|---|",
        ]
        for fam, s in report["scaling"].items():
            fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
            lines.append(
                f"| {fam} | {', '.join(map(str, s['sizes']))} | {fmt(s['search_slope'])} | {fmt(s['total_slope'])} |"
            )
    for name, e in sorted(report.get("embed", {}).items()):
        lines += [
            "",
            f"Embed: encoder `{name}`, {e.get('threads', '?')} thread(s): "
            + (
                f"{e['sent_per_s']:.0f} sentences/s ({e['sentences']} gettext sentences, "
                f"peak RSS {e['peak_rss_bytes'] / GIB:.2f} GiB)"
                if "sent_per_s" in e
                else e.get("error", "?")
            ),
        ]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    by = {}
    for r in report["runs"]:
        if "search_s" in r:
            by.setdefault(family(r["factory"]), []).append((r["n"], r["search_s"] + r["train_s"] + r["add_s"]))
    for fam, pts in by.items():
        pts.sort()
        ax.loglog([p[0] for p in pts], [p[1] for p in pts], "o-", label=fam)
    ax.set_xlabel("vectors per side")
    ax.set_ylabel("index + k-NN both ways (s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000", help="vectors per side, comma-separated")
    p.add_argument("--dim", type=int, default=1024)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument(
        "--indexes",
        default="Flat,IVF,Flat,IVF,SQ8,IVF,PQ",
        help="families: Flat, IVF,Flat, IVF,SQ8, IVF,PQ, OPQ,IVF,PQ (nlist set from N), or explicit "
        "factory strings separated by ';' (default: %(default)s)",
    )
    p.add_argument("--pq-m", type=int, default=64, help="PQ sub-quantizers (bytes per vector)")
    p.add_argument(
        "--nlist",
        type=int,
        default=None,
        help="IVF lists at every size (default: a power of two near 4 x sqrt(N), which makes search "
        "time grow ~N^1.5; a fixed nlist keeps the per-query coarse cost constant)",
    )
    p.add_argument(
        "--rows-per-list",
        type=int,
        default=512,
        help="IVF_HNSW families: nlist ~ N / this (constant list size, so search time grows ~linearly)",
    )
    p.add_argument("--flat-max", type=int, default=100_000, help="skip Flat above this size (quadratic time)")
    p.add_argument("--ivf-flat-max-gib", type=float, default=2.0, help="skip IVF,Flat when its index exceeds this")
    p.add_argument(
        "--train-sample",
        type=int,
        default=None,
        help="rows to train IVF/PQ on (default: min(N, max(65536, 64 x nlist)))",
    )
    p.add_argument("--clusters", type=int, default=1024)
    p.add_argument("--plant-every", type=int, default=10)
    p.add_argument("--exact-sample", type=int, default=1000, help="queries used for recall against exact search")
    p.add_argument("--threads", type=int, default=0, help="faiss threads (default: all cores)")
    p.add_argument("--encoder", default=None, help="also time this encoder spec (e.g. ngram, e5, use)")
    p.add_argument("--embed-sentences", type=int, default=20_000)
    p.add_argument("--work", default="/tmp/nllb-mini-bench-mining", help="synthetic data (N=1M: 4 GiB)")
    p.add_argument("--out", default=str(ROOT / "bench" / "out"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-data", action="store_true", help="keep the synthetic shards after the run")
    p.add_argument(
        "--append",
        action="store_true",
        help="keep the runs of an earlier OUT/mining.json (re-measured (N, index) pairs are replaced): "
        "run the big sizes separately, and a killed run loses only its unfinished configuration",
    )
    a = p.parse_args(argv)

    sizes = [int(s) for s in a.sizes.split(",") if s]
    names = [s for s in (a.indexes.split(";") if ";" in a.indexes else _split_families(a.indexes)) if s]
    work, out = Path(a.work), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import faiss

    report = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "dim": a.dim,
        "k": a.k,
        "nprobe": a.nprobe,
        "nlist": a.nlist or f"IVF ~4 sqrt(N), IVF_HNSW ~N/{a.rows_per_list}",
        "threads": a.threads or faiss.omp_get_max_threads(),
        "plant_every": a.plant_every,
        "faiss": faiss.__version__,
        "runs": [],
        "embed": {},
        "command": " ".join(sys.argv),
    }
    if a.append and (out / "mining.json").is_file():
        old = json.loads((out / "mining.json").read_text())
        report["runs"] = old.get("runs", [])
        report["embed"] = old.get("embed") or {}
        report["command"] = f"{old.get('command', '')}; then {report['command']}"
    if a.encoder:
        print(f"bench: embed with {a.encoder} ({a.embed_sentences} sentences)", file=sys.stderr)
        report["embed"][a.encoder] = {
            **run_child(
                "embed",
                {"encoder": a.encoder, "sentences": a.embed_sentences, "batch_size": 512, "work": str(work / "embed")},
            ),
            "threads": a.threads or os.cpu_count(),
        }
    for n in sizes:
        t0 = time.time()
        src, tgt = generate(work / f"n{n}", n, a.dim, a.clusters, a.plant_every, a.seed)
        gt_path = work / f"n{n}" / f"exact_k{a.k}.npz"
        if not gt_path.is_file():
            gt = exact_topk(src, tgt, a.k, a.exact_sample, a.seed)
            np.savez(gt_path, **gt)
        print(f"bench: N={n}: data + exact sample ready in {time.time() - t0:.0f}s", file=sys.stderr)
        for factory, skip in factories_for(
            n, a.dim, names, a.flat_max, a.ivf_flat_max_gib, a.pq_m, a.nlist, a.rows_per_list
        ):
            if skip:
                put_run(report, {"n": n, "factory": factory, "skipped": skip})
                continue
            nl = a.nlist or auto_nlist(n)
            args = {
                "n": n,
                "factory": factory,
                "src": str(src),
                "tgt": str(tgt),
                "k": a.k,
                "nprobe": a.nprobe,
                "threads": a.threads,
                "train_sample": min(n, a.train_sample or max(65_536, 64 * nl)),
                "gt": str(gt_path),
                "plant_every": a.plant_every,
                "work": str(work / f"n{n}" / "run"),
            }
            print(f"bench: N={n} {factory} ...", file=sys.stderr)
            r = run_child("knn", args)
            r.setdefault("threads", a.threads)
            put_run(report, r)
            save_report(report, out)  # after every configuration: a kill loses only the one running
            if "error" not in r:
                print(
                    f"bench: N={n} {factory}: search {r['search_s']:.1f}s, margin {r['margin_s']:.2f}s "
                    f"({100 * r['margin_share_of_search']:.1f}%), recall@{a.k} {r['recall_at_k']:.3f}, "
                    f"peak RSS {r['peak_rss_bytes'] / GIB:.2f} GiB",
                    file=sys.stderr,
                )
        if not a.keep_data:
            shutil.rmtree(work / f"n{n}", ignore_errors=True)
    md = save_report(report, out)
    plot(report, out / "mining_scaling.png")
    print(md)
    print(f"bench: wrote {out / 'mining.json'}, {out / 'mining.md'}", file=sys.stderr)
    return 0


def put_run(report: dict, run: dict) -> None:
    """Add ``run``, replacing an earlier one of the same (N, index): an --append re-run never duplicates rows."""
    key = (run.get("n"), run.get("factory"))
    report["runs"] = [r for r in report["runs"] if (r.get("n"), r.get("factory")) != key] + [run]


def save_report(report: dict, out: Path) -> str:
    """Recompute the scaling slopes and write mining.json / mining.md atomically; returns the markdown."""
    report["runs"].sort(key=lambda r: (r.get("n", 0), str(r.get("factory"))))
    fams: dict[str, list[dict]] = {}
    for r in report["runs"]:
        if "search_s" in r:
            fams.setdefault(family(r["factory"]), []).append(r)
    report["scaling"] = {
        fam: {
            "sizes": [r["n"] for r in rs],
            "search_slope": slope([(r["n"], r["search_s"]) for r in rs]),
            "total_slope": slope([(r["n"], r["search_s"] + r["train_s"] + r["add_s"]) for r in rs]),
        }
        for fam, rs in fams.items()
    }
    md = markdown(report)
    for name, text in (("mining.json", json.dumps(report, indent=1)), ("mining.md", md)):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
    return md


def _split_families(text: str) -> list[str]:
    """'Flat,IVF,Flat,IVF,PQ' -> ['Flat', 'IVF,Flat', 'IVF,PQ'] (families are known words)."""
    toks, out, i = text.split(","), [], 0
    while i < len(toks):
        if toks[i] == "OPQ" and i + 2 < len(toks):
            out.append(",".join(toks[i : i + 3]))
            i += 3
        elif toks[i] in ("IVF", "IVF_HNSW") and i + 1 < len(toks):
            out.append(",".join(toks[i : i + 2]))
            i += 2
        else:
            out.append(toks[i])
            i += 1
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, args, result = sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
        res = child(args) if kind == "knn" else embed_child(args)
        result.write_text(json.dumps(res))
        sys.exit(0)
    sys.exit(main())
