"""Where the language tokens go: the one place that lays out a model's source row and decoder prefix.

mt-train's models (the defaults) read ``__src__ x1 .. xn </s>`` and their decoder starts with ``__tgt__``.
The released NLLB-200 models (fairseq's ``--encoder-langtok src --decoder-langtok``, HF's NllbTokenizer)
read the same source row, but their decoder starts with ``</s> __tgt__``: fairseq trains on targets
``__tgt__ y </s>`` shifted right behind ``</s>``, and HF starts from ``decoder_start_token_id`` (``</s>``)
and forces the language token next (``forced_bos_token_id``). HF's NllbTokenizer with
``legacy_behaviour=True`` (its first behaviour, still an option) puts the language token last:
``x1 .. xn </s> __src__``; models fine-tuned that way keep that layout. Both choices are
``TransformerConfig`` fields stored in the checkpoint (``source_langtok``, ``decoder_start``), so a model
always gets the rows it was trained on.

Training (``mt.data.pair_dataset``: ``collate`` and the validation decoder's ``ds.prefix``) and inference
(``mt.generate.translator``) both call these two functions; nothing else places a language token or
``</s>`` (tests/test_data_rows.py checks that the rows of both sides agree for every layout).

Training (``mt.data.pair_dataset.collate``) teacher-forces the decoder on ``prefix + y + </s>``: the
decoder input is that sequence without its last token, the target is it without its first, so the
forced tokens after the first are predicted too. For ``eos_lang`` that is fairseq's NLLB training
(target ``__tgt__ y </s>``, input ``</s> __tgt__ y``) and HF's (``labels = [tgt_lang] y </s>``,
``decoder_input_ids = shift_tokens_right(labels, decoder_start_token_id=</s>)``).
"""

from __future__ import annotations

from typing import Sequence

# Tokens source_row adds to a sentence's ids (``__src__`` and ``</s>``): the source length a model sees.
SOURCE_SPECIALS = 2


def source_row(ids: Sequence[int], lang_token: int, eos: int, source_langtok: str = "first") -> list[int]:
    """The encoder input of one sentence: ``ids`` (dictionary ids of its pieces) with ``</s>`` and ``__src__``."""
    if source_langtok == "last":
        return [*ids, eos, lang_token]
    return [lang_token, *ids, eos]


def decoder_prefix(lang_token: int, eos: int, decoder_start: str = "lang") -> list[int]:
    """The tokens the decoder starts from before the first output token."""
    return [eos, lang_token] if decoder_start == "eos_lang" else [lang_token]
