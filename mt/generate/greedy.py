"""Greedy decoding for validation chrF during training: beam 1 of ``mt.generate.search``.

Kept as its own small function because ``mt.train.validate`` calls it with tensors it already has; the search
itself (cache, length limits, finished sentences leaving the batch) lives in one place.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mt.generate.search import SearchConfig, search
from mt.models.transformer import Transformer


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
    banned: Sequence[int] = (),
) -> list[list[int]]:
    """Hypotheses (token ids without the language token and ``</s>``) for right-padded ``src_tokens``.

    ``tgt_lang_tokens``: (B,) dictionary ids of ``__tgt__``, or (B, P) decoder prefixes (``</s> __tgt__``,
    ``mt.data.rows.decoder_prefix``); at most ``max_len_a * src_len + max_len_b``
    tokens (and the model's ``max_target_positions - 1``) before ``</s>``. ``banned``: ids never produced.
    """
    cfg = SearchConfig(beam=1, max_len_a=max_len_a, max_len_b=max_len_b, min_len=0)
    hyps = search(
        model,
        src_tokens,
        tgt_lang_tokens.to(src_tokens.device),
        cfg,
        eos,
        banned=banned,
        src_lang=src_lang,
        tgt_lang=tgt_lang,
        use_cache=use_cache,
    )
    return [h[0].tokens for h in hyps]
