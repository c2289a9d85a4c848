"""Training: the loop (``trainer``), its criterion, optimiser, validation, stability monitor and the MoE/expert-parallel
helpers. ``mt-train`` is ``cli.train_main``; ``python -m mt.train`` runs it too (torchrun)."""
