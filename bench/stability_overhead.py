"""Cost of mt-train's stability monitor (``mt.train.stability.AdamStats``) against the training step it watches.

One process builds an ``--arch`` model, AdamW and the label-smoothed criterion as mt-train does, and
times full training steps (forward, loss, backward, clip, optimizer step) on synthetic batches of
``--max-tokens`` tokens, and the monitor's ``compute`` right after each step (what mt-train runs on the
update of every ``--log-interval``-th step). Reported: ms per step, ms per observation, and the overhead
per update at log intervals 1, 10 and 100 (observation / (interval x step)). Measures, never asserts.

    python bench/stability_overhead.py --arch transformer_mini --vocab 4000 --max-tokens 1536
    python bench/stability_overhead.py --arch transformer_base --vocab 32000 --max-tokens 4096 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mt.models.config import ForwardContext, arch_config  # noqa: E402
from mt.models.transformer import build_model  # noqa: E402
from mt.train.criterion import LabelSmoothedCrossEntropy  # noqa: E402
from mt.train.optim import build_optimizer  # noqa: E402
from mt.train.stability import AdamStats  # noqa: E402


def _batch(vocab: int, max_tokens: int, length: int, device: torch.device, gen: torch.Generator):
    n = max(1, max_tokens // length)
    src = torch.randint(4, vocab, (n, length), generator=gen).to(device)
    tgt = torch.randint(4, vocab, (n, length), generator=gen).to(device)
    return src, tgt


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="transformer_mini")
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--max-tokens", type=int, default=1536)
    ap.add_argument("--length", type=int, default=24, help="tokens per synthetic sentence")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = arch_config(args.arch, vocab_size=args.vocab, padding_idx=1, langs=["eng_Latn", "deu_Latn"])
    model = build_model(cfg).to(device)
    opt = build_optimizer(model.parameters(), 1e-3, (0.9, 0.98), 1e-8, 0.0)
    crit = LabelSmoothedCrossEntropy(0.1, {})
    stats = AdamStats(model.named_parameters())
    gen = torch.Generator().manual_seed(0)
    step_ms, obs_ms = [], []
    for i in range(args.warmup + args.steps):
        src, tgt = _batch(args.vocab, args.max_tokens, args.length, device, gen)
        _sync(device)
        t0 = time.perf_counter()
        mask = torch.ones_like(tgt, dtype=torch.bool)
        hidden = model(src, tgt, ForwardContext(), target_mask=mask, features_only=True)
        out = crit(hidden, model.output_weight, tgt[mask], {})
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        opt.step()
        _sync(device)
        t1 = time.perf_counter()
        stats.compute(opt)
        _sync(device)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if i >= args.warmup:
            step_ms.append(1000 * (t1 - t0))
            obs_ms.append(1000 * (t2 - t1))
    step, obs = statistics.median(step_ms), statistics.median(obs_ms)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{args.arch} ({n_params / 1e6:.1f}M parameters, {len(stats.names)} groups) on {device}, "
        f"{args.max_tokens} tokens/batch, {args.threads} thread(s)"
    )
    print(f"step {step:.1f} ms (median of {args.steps}); monitor {obs:.2f} ms per observation")
    for interval in (1, 10, 100):
        print(f"  --log-interval {interval:>3}: overhead {100 * obs / (interval * step):.3f}% of step time")


if __name__ == "__main__":
    main()
