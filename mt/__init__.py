"""nllb-mini: the NLLB recipe (mining, sparse-MoE translation, evaluation) in plain PyTorch."""

__version__ = "0.1.0"
