"""Console entry points of ``mining/``. Each stage module owns its argparse in ``cli(argv)``;
these wrappers import it lazily (so ``mine-lid --help`` does not import faiss or torch)."""

from __future__ import annotations

import importlib

from mt.common.errors import cli_entry


def _run(module: str, func: str, argv: list[str] | None) -> int:
    return getattr(importlib.import_module(module), func)(argv)


@cli_entry
def lid_main(argv: list[str] | None = None) -> int:
    return _run("mining.lid", "cli", argv)


@cli_entry
def filter_main(argv: list[str] | None = None) -> int:
    return _run("mining.filters", "cli", argv)


@cli_entry
def embed_main(argv: list[str] | None = None) -> int:
    return _run("mining.embed", "cli", argv)


@cli_entry
def index_main(argv: list[str] | None = None) -> int:
    return _run("mining.index", "cli_index", argv)


@cli_entry
def knn_main(argv: list[str] | None = None) -> int:
    return _run("mining.index", "cli_knn", argv)


@cli_entry
def bitext_main(argv: list[str] | None = None) -> int:
    return _run("mining.margin", "cli", argv)


@cli_entry
def eval_main(argv: list[str] | None = None) -> int:
    return _run("mining.evaluate", "cli", argv)


@cli_entry
def train_encoder_main(argv: list[str] | None = None) -> int:
    return _run("mining.train_encoder", "cli", argv)
