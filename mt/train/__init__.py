"""Training: the loop (``trainer``), its criterion, optimiser, validation, stability monitor and the MoE/expert-parallel
helpers. ``mt-train`` is ``cli.train_main``; ``python -m mt.train`` runs it too (torchrun)."""


def main(argv: list[str] | None = None) -> int:
    """The ``mt.train:main`` console-script target of installs made before ``mt/train/`` became a package."""
    from mt.train.cli import train_main

    return train_main(argv)
