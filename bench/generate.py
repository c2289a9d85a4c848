"""Translation speed: our search (fp32, bf16, int8) vs Hugging Face ``generate()`` on the same weights exported
as M2M100, vs CTranslate2 float32 and int8 (the same export converted). One run, same inputs, same beam,
same length limits; sentences/s and generated tokens/s, plus how often each engine's output equals ours.

    # final numbers (a quiet machine): a trained checkpoint and real sentences
    python bench/generate.py --path work/demo/ckpt/checkpoint_best.pt \\
        --input work/demo/corpus/devtest/eng_Latn.devtest -s eng_Latn -t deu_Latn --beam 4 --n 1000 --threads 2
    # shapes without a trained model: random weights of an --arch over a data dir's dict.txt/spm.model,
    # every engine forced to produce exactly --fixed-length tokens
    python bench/generate.py --random-arch transformer_base --data work/demo/bin --input FILE -s eng_Latn -t deu_Latn \\
        --fixed-length 24

Writes a README-ready markdown table (and the raw numbers as JSON) to ``bench/out/generate.{md,json}``.
MoE checkpoints: HF's equivalent is NllbMoe (``hf_model_for``), not wired until the MoE layers land; its
row is skipped with a note, as are CTranslate2's (no MoE converter). Measures, never asserts.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mt.data.dictionary import Dictionary  # noqa: E402
from mt.formats import checkpoint as ckpt  # noqa: E402
from mt.generate.export import build_hf_model, check_dense, export  # noqa: E402
from mt.generate.loading import banned_ids  # noqa: E402
from mt.generate.search import SearchConfig, max_lengths  # noqa: E402
from mt.generate.translator import Translator, length_batches  # noqa: E402
from mt.models import gemm_shapes  # noqa: E402
from mt.models.config import arch_config  # noqa: E402
from mt.models.transformer import build_model  # noqa: E402


def random_checkpoint(arch: str, data: Path, out: Path, seed: int = 0) -> Path:
    """A random-weight checkpoint of ``arch`` over ``data``'s dictionary (decoder LN gains randomised so a
    fresh model does not just repeat its previous token)."""
    d = Dictionary.load(data / "dict.txt")
    cfg = arch_config(arch, vocab_size=len(d), padding_idx=d.pad(), langs=d.langs(), dropout=0.0)
    torch.manual_seed(seed)
    model = build_model(cfg)
    with torch.no_grad():
        g = model.decoder.layer_norm.weight
        g.copy_(torch.randn(g.shape) * 2.0)
    state = ckpt.weights_state(cfg.to_dict(), model.state_dict(), d.checksum(), {"data": str(data)})
    path = out / "random.pt"
    ckpt.save_checkpoint(state, path)
    return path


def hf_model_for(tr: Translator):
    """The HF model equivalent to ours: M2M100 for dense checkpoints; NllbMoe for MoE ones (to come)."""
    check_dense(tr.loaded)  # raises a UserError for MoE checkpoints until an NllbMoe mapping exists
    return build_hf_model(tr.loaded)


def search_cfg(args, fixed: int) -> SearchConfig:
    if fixed:
        return SearchConfig(beam=args.beam, lenpen=args.lenpen, max_len_a=0, max_len_b=fixed, min_len=fixed)
    return SearchConfig(beam=args.beam, lenpen=args.lenpen, max_len_a=args.max_len_a, max_len_b=args.max_len_b)


def run_ours(tr: Translator, ids, args, bf16: bool):
    tr.bf16 = bf16
    cfg = search_cfg(args, args.fixed_length)
    tr.translate_ids(ids[:8], args.s, args.t, cfg, args.max_tokens)  # warm-up
    t0 = time.perf_counter()
    out = tr.translate_ids(ids, args.s, args.t, cfg, args.max_tokens)
    return time.perf_counter() - t0, [h[0].tokens for h in out]


def run_hf(tr: Translator, ids, args):
    model = hf_model_for(tr)
    d = tr.dictionary
    cfg = search_cfg(args, args.fixed_length)
    src_tok, tgt_tok = d.lang_index(args.s), d.lang_index(args.t)
    rows = [[src_tok, *x, d.eos()] for x in ids]
    caps = max_lengths(torch.tensor([len(r) for r in rows]), cfg, tr.model.cfg.max_target_positions).tolist()
    out: list[list[int]] = [[] for _ in rows]

    def generate(idx):
        S = max(len(rows[i]) for i in idx)
        inp = torch.full((len(idx), S), d.pad(), dtype=torch.long)
        mask = torch.zeros((len(idx), S), dtype=torch.long)
        for b, i in enumerate(idx):
            inp[b, : len(rows[i])] = torch.tensor(rows[i])
            mask[b, : len(rows[i])] = 1
        new = max(caps[i] for i in idx) + 1  # our cap counts tokens before </s>; HF's counts </s>
        kw = dict(min_new_tokens=new, max_new_tokens=new) if args.fixed_length else dict(max_new_tokens=new)
        with torch.no_grad():
            gen = model.generate(
                input_ids=inp,
                attention_mask=mask,
                decoder_start_token_id=tgt_tok,
                num_beams=args.beam,
                do_sample=False,
                length_penalty=args.lenpen,
                suppress_tokens=banned_ids(d),
                **kw,
            )
        for b, i in enumerate(idx):
            toks = gen[b, 1:].tolist()
            out[i] = toks[: toks.index(d.eos())] if d.eos() in toks else [t for t in toks if t != d.pad()]

    return timed_batches(generate, length_batches([len(r) for r in rows], args.max_tokens)), out


def timed_batches(run, batches: list[list[int]]) -> float:
    """Seconds for ``run`` over every batch, after a warm-up on 8 sentences of the first (not timed)."""
    run(batches[0][:8])
    t0 = time.perf_counter()
    for idx in batches:
        run(idx)
    return time.perf_counter() - t0


def run_ct2(tr: Translator, ids, args, ct2_dir: Path, compute_type: str):
    """CTranslate2 on the same length-sorted batches, each with the batch's length cap (as HF)."""
    import ctranslate2

    d = tr.dictionary
    cfg = search_cfg(args, args.fixed_length)
    rows = [[f"__{args.s}__", *tr.pieces(x), "</s>"] for x in ids]
    caps = max_lengths(torch.tensor([len(r) for r in rows]), cfg, tr.model.cfg.max_target_positions).tolist()
    ct = ctranslate2.Translator(str(ct2_dir), device="cpu", compute_type=compute_type, intra_threads=args.threads)
    ban = [[d[i]] for i in banned_ids(d)]
    out: list[list[int]] = [[] for _ in rows]

    def translate(idx):
        cap = max(caps[i] for i in idx) + 1  # our cap counts tokens before </s>
        kw = dict(beam_size=args.beam, length_penalty=args.lenpen, max_decoding_length=cap, suppress_sequences=ban)
        if args.fixed_length:
            kw["min_decoding_length"] = cap
        res = ct.translate_batch([rows[i] for i in idx], target_prefix=[[f"__{args.t}__"]] * len(idx), **kw)
        for i, r in zip(idx, res):
            out[i] = [d.index(p) for p in r.hypotheses[0]]

    return timed_batches(translate, length_batches([len(r) for r in rows], args.max_tokens)), out


def same_output(ours: list[int], theirs: list[int], cap: int) -> bool:
    """Equal, or ours was stopped by its length cap and theirs continues it (engines count the cap differently)."""
    return theirs == ours or (len(ours) >= cap and theirs[: len(ours)] == ours)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", help="checkpoint (mt-train)")
    p.add_argument("--random-arch", help="instead of --path: random weights of this --arch over --data's dict.txt")
    p.add_argument("--data", default="", help="dict.txt + spm.model directory (default: found from the checkpoint)")
    p.add_argument("--input", required=True, help="source sentences, one per line")
    p.add_argument("-s", required=True)
    p.add_argument("-t", required=True)
    p.add_argument("--n", type=int, default=1000, help="sentences (default: %(default)s)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--lenpen", type=float, default=1.0)
    p.add_argument("--max-len-a", type=float, default=1.2)
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--fixed-length", type=int, default=0, help="force exactly N output tokens in every engine")
    p.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch, every engine")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engines", default="ours-fp32,ours-bf16,ours-int8,hf-fp32,ct2-fp32,ct2-int8")
    p.add_argument("--out", default=str(REPO / "bench" / "out"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    engines = [e for e in args.engines.split(",") if e]

    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        tmp = Path(tmp)
        path = Path(args.path) if args.path else random_checkpoint(args.random_arch, Path(args.data), tmp)
        tr = Translator(path, data=args.data or None)
        lines = [line.rstrip("\n") for line in open(args.input, encoding="utf-8")]
        lines = [line for line in lines if line.strip()][: args.n]
        ids = tr.encode(lines)
        ids = [x[: tr.max_source_positions - 2] for x in ids]
        caps = max_lengths(
            torch.tensor([len(x) + 2 for x in ids]),
            search_cfg(args, args.fixed_length),
            tr.model.cfg.max_target_positions,
        ).tolist()
        c = tr.model.cfg
        shape = (
            f"{c.encoder_layers}+{c.decoder_layers} layers, d={c.encoder_embed_dim}, "
            f"ffn={c.encoder_ffn_embed_dim}, V={c.vocab_size}"
        )
        print(
            f"bench: {len(ids)} sentences, {sum(map(len, ids))} source tokens; model {shape}; beam {args.beam}; "
            f"{args.threads} threads",
            file=sys.stderr,
        )
        rows, ref, notes = [], None, []
        ct2_dir = None
        for eng in engines:
            try:
                if eng in ("ours-fp32", "ours-bf16"):
                    secs, hyps = run_ours(tr, ids, args, bf16=eng.endswith("bf16"))
                elif eng == "ours-fp32-mkl":  # the float32 products on MKL, as before oneDNN (gemm_shapes.linear)
                    with gemm_shapes.mkl_only():
                        secs, hyps = run_ours(tr, ids, args, bf16=False)
                elif eng == "ours-int8":  # its own Translator: --quantize int8 replaces the model's matrices
                    tr8 = Translator(path, data=args.data or None, quantize="int8")
                    secs, hyps = run_ours(tr8, ids, args, bf16=False)
                elif eng == "hf-fp32":
                    secs, hyps = run_hf(tr, ids, args)
                elif eng in ("ct2-fp32", "ct2-int8"):
                    if ct2_dir is None:
                        ct2_dir = export(path, tmp / "ct2", "ctranslate2", data=args.data or None, force=True)
                    secs, hyps = run_ct2(tr, ids, args, ct2_dir, "float32" if eng == "ct2-fp32" else "int8")
                else:
                    raise SystemExit(f"unknown engine {eng}")
            except Exception as exc:  # a missing optional package or an MoE model: note it, keep going
                notes.append(f"{eng}: skipped ({type(exc).__name__}: {exc})")
                print(notes[-1], file=sys.stderr)
                continue
            ntok = sum(len(h) + 1 for h in hyps)
            if ref is None:
                ref = hyps
            same = sum(same_output(a, b, c) for a, b, c in zip(ref, hyps, caps)) / len(ref)
            rows.append(
                {
                    "engine": eng,
                    "seconds": secs,
                    "sent_per_s": len(ids) / secs,
                    "tok_per_s": ntok / secs,
                    "tokens": ntok,
                    "same_as_first": same,
                }
            )
            print(
                f"{eng:10s} {secs:8.2f}s {len(ids) / secs:9.1f} sent/s {ntok / secs:9.1f} tok/s  same={same:.1%}",
                file=sys.stderr,
            )
    hf = next((r for r in rows if r["engine"] == "hf-fp32"), None)
    ct = next((r for r in rows if r["engine"] == "ct2-fp32"), None)
    ct8 = next((r for r in rows if r["engine"] == "ct2-int8"), None)
    length = (
        f"fixed length {args.fixed_length}" if args.fixed_length else f"max len {args.max_len_a}*src+{args.max_len_b}"
    )
    md = [
        f"Translation speed, {len(ids)} sentences {args.s}->{args.t} from `{Path(args.input).name}`, beam {args.beam}, "
        f"{length}, "
        f"--max-tokens {args.max_tokens}, {args.threads} threads, {platform.processor() or platform.machine()}; "
        f"model: {shape} ({'random weights' if args.random_arch else Path(path).name}).",
        "",
        "| engine | sentences/s | tokens/s | vs HF generate() | vs CT2 fp32 | vs CT2 int8 | output = first row's |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        vs_hf = f"{r['sent_per_s'] / hf['sent_per_s']:.2f}x" if hf else "n/a"
        vs_ct = f"{r['sent_per_s'] / ct['sent_per_s']:.2f}x" if ct else "n/a"
        vs_ct8 = f"{r['sent_per_s'] / ct8['sent_per_s']:.2f}x" if ct8 else "n/a"
        md.append(
            f"| {r['engine']} | {r['sent_per_s']:.1f} | {r['tok_per_s']:.0f} | {vs_hf} | {vs_ct} | {vs_ct8} | "
            f"{r['same_as_first']:.1%} |"
        )
    md += [""] + [f"- {n}" for n in notes]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "generate.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    (out / "generate.json").write_text(json.dumps({"args": vars(args), "rows": rows, "notes": notes}, indent=1) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
