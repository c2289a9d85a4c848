"""GEMM shapes CPU kernels run well: row padding for low-precision GEMMs (MoE experts, fused vocabulary
loss) and row blocks for the vocabulary projection of decoding (``blocked_linear``).

Why: oneDNN (PyTorch's CPU bf16/fp16 GEMM) compiles a kernel per GEMM shape and caches it; a new shape
costs ~1 ms (2-core box: 1.04 ms per call at random row counts vs 0.14 ms at a fixed one for a
(1000 x 128) @ (128 x 512) bf16 GEMM). Row counts that change with every batch (an expert's tokens, the
loss's last chunk) miss that cache on nearly every call, so those rows are zero-padded to a multiple of
``ROW_MULTIPLE``: a few dozen wasted rows instead of a compile. fp32 GEMMs (MKL) have no per-shape cost and
stay unpadded, as does every GPU tensor.

Row blocks: MKL's float32 GEMM runs a few dozen decoder rows against a vocabulary-sized weight at half its
speed on smaller shapes. Measured on the 2-core AVX2 EPYC (Zen 3, 1 MiB L2 per core), 64 x 1024 @ 1024 x
256206 (NLLB-200's output projection at beam 4 x 16 sentences): 1137 ms whole, 527 ms as 256-row blocks
(1 MiB of weight each) at 1 thread, 882 vs 368 ms at 2 threads; 64 x 512 @ 512 x 8000: 18.6 vs 9.6 ms.
Decoding 16 sentences at that shape (beam 4, 22 steps, 1 thread): 38.8 s whole, 29.1 s with the vocabulary
product blocked, 27.5 s with the layers' >= 2048-row products blocked too. transformer_base's output
projection (4012 x 512, 7.8 MiB): 45.7 -> 69.7 GFLOP/s at 800 rows (beam 4 x 200 sentences), 51 -> 72 at
200, 45 -> 54 at 32, in 512-row blocks. Products under 6 MiB of weight or under 2048 output rows gained
nothing or lost (2048 x 512: 0.39 ms whole, 0.58 blocked at 8 rows; 81.5 vs 80.5 GFLOP/s at 200), so they
run whole; so does everything but float32 on the CPU.

oneDNN's float32 GEMM (``linear``): PyTorch sends float32 products to MKL, whose sgemm runs on this AMD CPU
below oneDNN's (both ship in the torch wheel) once the weight outgrows the caches. Measured on the 2-core
EPYC, GFLOP/s MKL / oneDNN, plain weights (no repacking, no copy), 2 threads: 256 x 1024 @ 1024 x 4096 (16 MiB
of weight) 60 / 111, 16 x 1024 @ 1024 x 4096 26 / 47, 512 x 512 @ 512 x 2048 (4 MiB) 116 / 141, 800 x 512 @
512 x 1536 (3 MiB) 82 / 118; but 512 x 384 @ 384 x 1536 (2.25 MiB) 146 / 135 and 512 x 512 @ 512 x 512 146 /
143: weights under ``ONEDNN_MIN_BYTES`` stay on MKL (e5-small's, all <= 2.25 MiB: mine-embed 81 sentences/s
on MKL, 70 on oneDNN at 1 thread). At 1 thread: 45 / 55 and 18 / 24 at the first two shapes, 49 / 67 for
transformer_base's output projection (800 x 512 @ 512 x 4012, 8 MiB), but 74 / 65 at 800 x 2048 @ 2048 x 512
(4 MiB) and 19 / 14 at 2 rows: there oneDNN takes only weights from ``ONEDNN_MIN_BYTES_1THREAD`` and products
from ``ONEDNN_MIN_ROWS`` rows (transformer_base decoding, 200 sentences: 4.0 sentences/s with every product
on oneDNN, 4.1-4.6 on MKL). The vocabulary product runs in
``ONEDNN_BLOCK_BYTES`` blocks (64 x 1024 @ 1024 x 256206: MKL in 256-row blocks 42 / 73 GFLOP/s at 1 / 2
threads, oneDNN in 4096-row blocks 49 / 83, whole 42 / 80). NLLB-200-600M's shape, decoding 64 sentences at
beam 4 (``bench/nllb.py``, one run): 0.59 / 0.94 sentences/s on MKL, 0.60 / 1.02 on oneDNN at 1 / 2 threads
(an earlier run: 0.54 / 0.87 vs 0.67 / 0.93). Used where no gradient is needed (decoding, embedding); training
keeps ``F.linear`` (at its 4000-row shapes oneDNN won the forward products and lost the weight gradients).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

ROW_MULTIPLE = 64
BLOCK_BYTES = 1 << 20  # weight bytes per row block: about one core's L2 on the CPUs measured
BLOCK_MIN_ROWS = 2048  # narrower products run whole
BLOCK_MIN_BYTES = 6 << 20  # and so do smaller weights


ONEDNN_MIN_ROWS = 64  # at 1 thread, MKL runs products with fewer rows faster
ONEDNN_MIN_BYTES = 3 << 20  # and smaller weights at any thread count
ONEDNN_MIN_BYTES_1THREAD = 8 << 20  # at 1 thread, mid-sized weights too
ONEDNN_BLOCK_BYTES = 16 << 20  # weight bytes per block of a wide oneDNN product


def _onednn_linear():
    """oneDNN's linear on plain float32 weights (the op PyTorch's CPU compiler uses), or None without it."""
    try:
        op = torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


ONEDNN = _onednn_linear()


def row_multiple(t: torch.Tensor) -> int:
    """The row multiple GEMMs on ``t`` should be padded to: ROW_MULTIPLE for CPU bf16/fp16, else 1."""
    return ROW_MULTIPLE if t.device.type == "cpu" and t.dtype in (torch.bfloat16, torch.float16) else 1


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def block_rows(weight: torch.Tensor) -> int:
    """Rows per block for ``blocked_linear`` on ``weight`` (out x in), or 0 to run the product whole."""
    out_f, in_f = weight.shape
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or out_f < BLOCK_MIN_ROWS:
        return 0
    if weight.numel() * weight.element_size() < BLOCK_MIN_BYTES:
        return 0
    rows = 64
    while rows * 2 * in_f * weight.element_size() <= BLOCK_BYTES and rows < 1024:
        rows *= 2
    return rows


def blocked_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    rows: int,
    out: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for 2-D ``x``, ``rows`` output features at a time, into one (n, out) tensor."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):  # mm(out=) has no autograd
        return torch.nn.functional.linear(x, weight, bias)
    n, out_f = x.size(0), weight.size(0)
    if out is None or out.shape != (n, out_f):
        out = x.new_empty(n, out_f)
    for j in range(0, out_f, rows):
        if bias is None:
            torch.mm(x, weight[j : j + rows].t(), out=out[:, j : j + rows])
        else:
            torch.addmm(bias[j : j + rows], x, weight[j : j + rows].t(), out=out[:, j : j + rows])
    return out


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """True where ``linear`` sends 2-D ``x @ weight.T`` to oneDNN: CPU float32 outside autocast, no gradient,
    a weight of at least ``ONEDNN_MIN_BYTES`` (at 1 thread ``ONEDNN_MIN_BYTES_1THREAD`` and
    ``ONEDNN_MIN_ROWS`` rows)."""
    return (
        ONEDNN is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.size(0) > 0
        and not torch.is_autocast_enabled("cpu")  # autocast picks the dtype: leave the product to F.linear
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and (
            weight.numel() * 4 >= ONEDNN_MIN_BYTES
            if torch.get_num_threads() > 1
            else weight.numel() * 4 >= ONEDNN_MIN_BYTES_1THREAD and x.size(0) >= ONEDNN_MIN_ROWS
        )
    )


def onednn_block_rows(weight: torch.Tensor) -> int:
    """Rows per oneDNN block for ``weight`` (out x in), or 0 when it runs whole (under two blocks' bytes)."""
    out_f, in_f = weight.shape
    rows = max(32, ONEDNN_BLOCK_BYTES // (in_f * weight.element_size()) // 32 * 32)
    return rows if out_f >= 2 * rows else 0


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for inference with the fastest CPU kernel measured for the shape.

    ``x`` of any leading shape (run as rows). oneDNN where ``use_onednn`` (wide weights in ``onednn_block_rows``
    blocks written into ``out``, a reusable (n, out_features) tensor for 2-D ``x``), else MKL, wide float32
    weights in ``block_rows`` blocks; ``out`` is only a buffer offer: use the returned tensor."""
    if x.dim() != 2:
        return linear(x.reshape(-1, x.size(-1)), weight, bias).view(*x.shape[:-1], weight.size(0))
    if use_onednn(x, weight):
        x = x.contiguous()
        rows = onednn_block_rows(weight)
        if not rows:
            return ONEDNN(x, weight, bias, "none", [], "")
        n, out_f = x.size(0), weight.size(0)
        if out is None or out.shape != (n, out_f):
            out = x.new_empty(n, out_f)
        for j in range(0, out_f, rows):
            b = None if bias is None else bias[j : j + rows]
            out[:, j : j + rows] = ONEDNN(x, weight[j : j + rows], b, "none", [], "")
        return out
    rows = block_rows(weight)
    if rows:
        return blocked_linear(x.contiguous(), weight, rows, out, bias)
    return torch.nn.functional.linear(x, weight, bias)


@contextmanager
def mkl_only() -> Iterator[None]:
    """Within the block, ``linear`` leaves every float32 product to MKL (the A/B of the oneDNN choice)."""
    global ONEDNN
    onednn, ONEDNN = ONEDNN, None
    try:
        yield
    finally:
        ONEDNN = onednn


class InferenceLinear(torch.nn.Linear):
    """``nn.Linear`` whose products go through ``linear`` (oneDNN where faster): same parameters, and with
    autograd on, or off the CPU, exactly ``nn.Linear``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def inference_linears_(model: torch.nn.Module) -> int:
    """Make every plain ``nn.Linear`` of ``model`` an ``InferenceLinear`` in place (its class only: no copy of
    the weights); returns how many. For models that decode: the encoder's products get the decoder's kernels."""
    n = 0
    for m in model.modules():
        if type(m) is torch.nn.Linear:
            m.__class__ = InferenceLinear
            n += 1
    return n
