"""Decoding, batch translation jobs and export.

- ``search``: beam search / greedy / sampling over ``Transformer.encode``/``decode`` (batched, cached);
  ``incremental``: the fast one-token-per-step decoder it uses; ``greedy``: beam 1 for validation.
- ``translator.Translator``: the Python API (text in, ``Hypothesis`` out, batching and order handled).
- ``generate`` (mt-generate), ``interactive`` (mt-interactive), ``batch_job`` + ``readers``
  (mt-translate), ``export`` (mt-export); ``cli`` holds their argument parsers.
"""
