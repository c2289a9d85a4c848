"""Throughput of the mining front end (LID, filters, every encoder backend) and, with --quality, how
well e5 / e5:query / USE find gettext translations (P@1 and ratio-margin accuracy).

Sentences are real: English msgids and their translations from /usr/share/locale/*/LC_MESSAGES/*.mo.
LASER2/LASER3 are timed with random weights at the released sizes (speed does not depend on the values):
LASER2 = 50,004 x 320 embeddings + 5-layer BiLSTM 512x2; LASER3 = 12-layer transformer, 1024-d, 16 heads,
FFN 4096 (the NLLB students' size). Measures, never asserts.

    taskset -c 0,1 python bench/mining_encoders.py --n 2000            # speeds on 2 cores
    taskset -c 0,1 python bench/mining_encoders.py --quality --pairs 300 --langs de,fr,ru,zh_CN,hi,ta,cy,eu
"""

from __future__ import annotations

import argparse
import gettext
import glob
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

_BAD = re.compile(r"[%{}<>&_\\$]")


def gettext_pairs(locale: str, limit: int, min_words: int = 4) -> list[tuple[str, str]]:
    pairs: dict[str, str] = {}
    for f in sorted(glob.glob(f"/usr/share/locale/{locale}/LC_MESSAGES/*.mo")):
        try:
            with open(f, "rb") as fh:
                cat = gettext.GNUTranslations(fh)._catalog
        except Exception:
            continue
        for k, v in cat.items():
            if (
                isinstance(k, str)
                and k
                and "\x04" not in k
                and "\x00" not in k
                and not _BAD.search(k)
                and isinstance(v, str)
                and not _BAD.search(v)
                and len(k.split()) >= min_words
                and k != v
            ):
                pairs.setdefault(k, v)
    items = sorted(pairs.items())
    random.Random(0).shuffle(items)
    return items[:limit]


def laser_dir_random(tmp: Path, sentences: list[str]) -> Path:
    """laser2.{pt,spm,cvocab} and laser3-wol_Latn.v1.pt at the released sizes, random weights."""
    import sentencepiece as spm
    from torch import nn

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(s.lower() for s in sentences),
        model_prefix=str(tmp / "sp"),
        vocab_size=4000,
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (tmp / "sp.model").rename(tmp / "laser2.spm")
    sp = spm.SentencePieceProcessor(model_file=str(tmp / "laser2.spm"))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]
    (tmp / "laser2.cvocab").write_text("".join(f"{p} 1\n" for p in pieces), encoding="utf-8")
    vocab = 50004
    torch.manual_seed(0)
    lstm = nn.LSTM(320, 512, num_layers=5, bidirectional=True)
    state = {
        "embed_tokens.weight": torch.randn(vocab, 320) * 0.1,
        **{f"lstm.{k}": v for k, v in lstm.state_dict().items()},
    }
    params = dict(
        num_embeddings=vocab,
        padding_idx=1,
        embed_dim=320,
        hidden_size=512,
        num_layers=5,
        bidirectional=True,
        left_pad=True,
        padding_value=0.0,
    )
    torch.save(
        {"params": params, "model": state, "dictionary": {p: 4 + i for i, p in enumerate(pieces)}}, tmp / "laser2.pt"
    )
    dim, ffn, layers = 1024, 4096, 12
    n = 4 + len(pieces) + 1
    st = {
        "embed_tokens.weight": torch.randn(n, dim) * 0.02,
        "layer_norm.weight": torch.ones(dim),
        "layer_norm.bias": torch.zeros(dim),
    }
    for i in range(layers):
        p = f"layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            st[p + f"self_attn.{name}.weight"] = torch.randn(dim, dim) * 0.02
            st[p + f"self_attn.{name}.bias"] = torch.zeros(dim)
        st[p + "fc1.weight"], st[p + "fc1.bias"] = torch.randn(ffn, dim) * 0.02, torch.zeros(ffn)
        st[p + "fc2.weight"], st[p + "fc2.bias"] = torch.randn(dim, ffn) * 0.02, torch.zeros(dim)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            st[p + f"{ln}.weight"], st[p + f"{ln}.bias"] = torch.ones(dim), torch.zeros(dim)
    cfg = argparse.Namespace(
        encoder_embed_dim=dim,
        encoder_ffn_embed_dim=ffn,
        encoder_layers=layers,
        encoder_attention_heads=16,
        encoder_normalize_before=True,
        prepend_bos=False,
        sentemb_criterion="maxpool",
    )
    torch.save({"cfg": {"model": cfg}, "model": st}, tmp / "laser3-wol_Latn.v1.pt")
    return tmp


def time_encoder(spec: str, sentences: list[str], lang: str, **kw) -> float:
    from mining.embed import EmbedConfig, encode_sorted
    from mining.encoders import load_encoder

    enc = load_encoder(spec, **kw)
    cfg = EmbedConfig(input="", output="", lang=lang, batch_size=kw.get("batch_size", 64))
    encode_sorted(enc, sentences[:32], lang, cfg)  # warm-up
    t = time.perf_counter()
    encode_sorted(enc, sentences, lang, cfg)
    return len(sentences) / (time.perf_counter() - t)


def bench_speed(n: int) -> None:
    from mining.filters import FilterConfig, FilterReport, filter_lines
    from mining.lid import LanguageIdentifier

    en = [a for a, _ in gettext_pairs("de", n)]
    print(
        f"{len(en)} English gettext sentences, mean {np.mean([len(s) for s in en]):.0f} chars; "
        f"torch threads {torch.get_num_threads()}"
    )
    lid = LanguageIdentifier()
    big = en * max(1, 20000 // len(en))
    t = time.perf_counter()
    lid.predict(big)
    print(f"mine-lid (lid.176, batched predict): {len(big) / (time.perf_counter() - t):,.0f} lines/s")
    t = time.perf_counter()
    list(filter_lines(big, "eng_Latn", FilterConfig(), FilterReport()))
    print(f"mine-filter (all filters + dedup):  {len(big) / (time.perf_counter() - t):,.0f} lines/s")
    for spec in ("e5", "use"):
        print(f"encoder {spec:<22} {time_encoder(spec, en, 'eng_Latn'):8.1f} sentences/s")
    with tempfile.TemporaryDirectory() as tmp:
        d = laser_dir_random(Path(tmp), en)
        for spec, lang in ((f"laser2:{d}", "eng_Latn"), (f"laser3:{d}:wol_Latn", "wol_Latn")):
            for bf16 in (False, True):
                name = spec.split(":")[0] + (" bf16" if bf16 else " fp32")
                print(f"encoder {name:<22} {time_encoder(spec, en, lang, bf16=bf16):8.1f} sentences/s")


def bench_quality(langs: list[str], n: int) -> None:
    from mining.encoders import load_encoder

    encs = {s: load_encoder(s) for s in ("e5", "e5:query", "use")}
    print("lang  pairs  " + "  ".join(f"{s:>16}" for s in encs) + "   (P@1 en->xx / ratio-margin k=4 accuracy)")
    for loc in langs:
        pairs = gettext_pairs(loc, n)
        if len(pairs) < 50:
            print(f"{loc:<5} only {len(pairs)} pairs, skipped")
            continue
        cells = []
        for enc in encs.values():
            a = enc.encode([p for p, _ in pairs], "eng_Latn")
            b = enc.encode([q for _, q in pairs], "xxx_Latn")
            s = a @ b.T
            gold = np.arange(len(pairs))
            k = 4
            ka, kb = np.sort(s, 1)[:, -k:].mean(1), np.sort(s, 0)[-k:, :].mean(0)
            margin = s / ((ka[:, None] + kb[None, :]) / 2)
            cells.append(f"{(s.argmax(1) == gold).mean():.3f}/{(margin.argmax(1) == gold).mean():.3f}")
        print(f"{loc:<5} {len(pairs):>5}  " + "  ".join(f"{c:>16}" for c in cells), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="sentences per speed measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--quality", action="store_true", help="retrieval quality instead of speed")
    p.add_argument("--pairs", type=int, default=300)
    p.add_argument("--langs", default="de,fr,ru,zh_CN,ja,ar,hi,uk,ta,af,cy,eu")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.quality:
        bench_quality(a.langs.split(","), a.pairs)
    else:
        bench_speed(a.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
