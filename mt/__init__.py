"""nllb-mini: the NLLB recipe (mining, sparse-MoE translation, evaluation) in plain PyTorch."""

from mt.common.threads import passive_wait_early

passive_wait_early()  # before any module imports torch: libgomp reads OMP_WAIT_POLICY once, when it loads

__version__ = "0.1.0"
