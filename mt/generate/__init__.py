"""Decoding, batch translation jobs and export.

- ``search``: beam search / greedy / sampling over ``Transformer.encode``/``decode`` (batched, cached);
  ``incremental``: the fast one-token-per-step decoder it uses; ``greedy``: beam 1 for validation.
- ``translator.Translator``: the Python API (text in, ``Hypothesis`` out, batching and order handled).
- ``generate`` (mt-generate), ``interactive`` (mt-interactive), ``batch_job`` + ``readers``
  (mt-translate), ``export`` (mt-export); ``cli`` holds their argument parsers.
- sparse MoE inference: ``moe_inference`` (gating mode, expert cache, expert-parallel decoding, set up by
  ``Translator``), ``expert_cache`` (K resident experts per layer, LRU; what of a memory-mapped checkpoint is
  resident: ``mt.common.pagemem``), ``moe_stats`` (mt-moe-stats: routing counts, expert placement).

The names below are the public decoding API: what code outside ``mt.generate`` decodes with (training's
validation among it, see tests/test_layering.py). Training code imports nothing else from this package.
"""

from mt.generate.greedy import greedy_decode
from mt.generate.loading import banned_ids
from mt.generate.search import Hypo, SearchConfig, search

__all__ = ["Hypo", "SearchConfig", "banned_ids", "greedy_decode", "search"]
