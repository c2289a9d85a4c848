"""Row padding for CPU low-precision GEMMs, shared by the MoE experts and the fused vocabulary loss.

Why: oneDNN (PyTorch's CPU bf16/fp16 GEMM) compiles a kernel per GEMM shape and caches it; a new shape
costs ~1 ms (2-core box: 1.04 ms per call at random row counts vs 0.14 ms at a fixed one for a
(1000 x 128) @ (128 x 512) bf16 GEMM). Row counts that change with every batch (an expert's tokens, the
loss's last chunk) miss that cache on nearly every call, so those rows are zero-padded to a multiple of
``ROW_MULTIPLE``: a few dozen wasted rows instead of a compile. fp32 GEMMs (MKL) have no per-shape cost and
stay unpadded, as does every GPU tensor.
"""

from __future__ import annotations

import torch

ROW_MULTIPLE = 64


def row_multiple(t: torch.Tensor) -> int:
    """The row multiple GEMMs on ``t`` should be padded to: ROW_MULTIPLE for CPU bf16/fp16, else 1."""
    return ROW_MULTIPLE if t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float16) else 1


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple
