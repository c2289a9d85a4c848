"""Greedy decoding with the decoder's key/value cache (validation chrF during training).

Beam search lives beside it later; both drive ``Transformer.encode`` / ``Transformer.decode`` with a
``DecoderCache`` and feed the whole prefix each step (fairseq's convention: the model only runs the
positions not yet cached).
"""

from __future__ import annotations

import torch

from mt.models.config import ForwardContext
from mt.models.transformer import DecoderCache, Transformer


@torch.no_grad()
def greedy_decode(
    model: Transformer,
    src_tokens: torch.Tensor,
    tgt_lang_tokens: torch.Tensor,
    eos: int,
    src_lang: torch.Tensor | None = None,
    tgt_lang: torch.Tensor | None = None,
    max_len_a: float = 1.2,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """Hypotheses (token ids without the language token and ``</s>``) for right-padded ``src_tokens``.

    ``tgt_lang_tokens``: (B,) dictionary ids of ``__tgt__``; output length is capped at
    ``max_len_a * src_len + max_len_b`` and the model's ``max_target_positions``.
    """
    model.eval()
    B = src_tokens.size(0)
    ctx = ForwardContext(src_lang=src_lang, tgt_lang=tgt_lang)
    enc = model.encode(src_tokens, ctx)
    src_len = (~enc.pad_mask).sum(1)
    max_len = torch.clamp((src_len.float() * max_len_a + max_len_b).long(), max=model.cfg.max_target_positions)
    prev = tgt_lang_tokens.view(B, 1).to(src_tokens.device)
    done = torch.zeros(B, dtype=torch.bool, device=src_tokens.device)
    out = [[] for _ in range(B)]
    cache = DecoderCache() if use_cache else None
    for step in range(int(max_len.max())):
        step_ctx = ForwardContext(src_lang=src_lang, tgt_lang=tgt_lang, src_pad_mask=enc.pad_mask)
        logits = model.decode(prev, enc, cache=cache, ctx=step_ctx)[:, -1]
        nxt = logits.argmax(-1)
        nxt = torch.where(step + 1 >= max_len, torch.full_like(nxt, eos), nxt)  # force </s> at the cap
        for b in torch.nonzero(~done).flatten().tolist():
            if int(nxt[b]) != eos:
                out[b].append(int(nxt[b]))
        done |= nxt.eq(eos)
        if bool(done.all()):
            break
        prev = torch.cat([prev, nxt[:, None]], dim=1)
    return out
