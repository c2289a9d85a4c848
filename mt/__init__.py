"""nllb-mini: the NLLB recipe (mining, sparse-MoE translation, evaluation) in plain PyTorch."""

from mt.common.memory import keep_freed_memory
from mt.common.threads import is_cli, passive_wait_early

passive_wait_early()  # before any module imports torch: libgomp reads OMP_WAIT_POLICY once, when it loads
if is_cli():
    keep_freed_memory()  # freed tensors stay for reuse instead of faulting their pages in again

__version__ = "0.1.0"
