"""int8 weights for CPU decoding (``--quantize int8``): dynamic quantisation of the matrix products.

Each weight matrix is stored as int8 with one float scale per output row (symmetric, per channel), and
each call quantises its activations on the fly (one scale per call, 7-bit range as fbgemm wants on CPUs
without VNNI, so the int16 accumulation of AVX2 cannot saturate). The products run in fbgemm's int8 GEMM
(``torch.ops.quantized.linear_dynamic``), the same kernels ``torch.ao.quantization.quantize_dynamic`` uses,
without its deprecated module swapping. Measured on the 2-core AVX2 EPYC (1 thread, ms per call, fp32 /
int8): 8 x 512 -> 2048: 1.1 / 0.25; 32 x 512 -> 2048: 2.3 / 0.6; 200 x 512 -> 2048: 9.4 / 6.4; the output
projection 8 x 512 -> 8000: 13.3 / 1.0. bf16 has no fast path on that CPU (2.8, 12.7, 79, 13.1).

What is quantised: every projection of the attention blocks and the dense FFNs (encoder and decoder),
each MoE expert's fc1 / fc2 (the stacked (E, f, d) parameters, quantised per expert with a scale per row:
``Int8Experts``), and the output projection of the incremental decoder (the largest single product of a
decoding step, 13x faster; the tests bound its effect on the argmax). Kept in float32: the embedding
lookup (a gather, no product), LayerNorms, softmaxes, the MoE / CMR gates (tiny, and they decide the
routing) and the language adapters. Measured on a trained toy model, the int8 output projection changed
no argmax that the other int8 products had not already changed (202 of 203 positions agree either way).

Not with an expert cache, memory-mapped experts or expert-parallel inference: those runners bring float
experts in per call (quantising them there would cost a pass over each expert at every miss); the refusal
says so. Quantised experts stay resident (a quarter of the float32 bytes).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn

from mt.common.errors import UserError
from mt.models.ffn import FeedForward
from mt.models.transformer import Attention

QUANTIZATIONS = ("none", "int8")


def check_quantize(quantize: str, device: torch.device | str, bf16: bool) -> bool:
    """True for int8; a one-line UserError for combinations that make no sense."""
    if quantize in ("", "none"):
        return False
    if quantize != "int8":
        raise UserError(f"--quantize must be none or int8, got {quantize!r}")
    if bf16:
        raise UserError("--quantize int8 and --bf16 exclude each other: int8 products replace the bf16 ones; pick one")
    if torch.device(device).type != "cpu":
        raise UserError(f"--quantize int8 is for CPU decoding (fbgemm kernels); on {device} use --bf16 instead")
    return True


def pack_int8(weight: torch.Tensor, bias: torch.Tensor | None) -> object:
    """fbgemm's packed int8 weight (one scale per output row) with a float32 bias."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1).clamp_min(1e-12) / 127.0).double()
    zero = torch.zeros(w.size(0), dtype=torch.long)
    b = None if bias is None else bias.detach().float().contiguous()
    with warnings.catch_warnings():  # torch marks quantized tensor creation deprecated; the ops are what we use
        warnings.simplefilter("ignore")
        q = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, b)


class Int8Linear(nn.Module):
    """``y = x W^T + b`` with W in int8 (a scale per row) and x quantised per call; float32 in and out."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = pack_int8(weight, bias)

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> "Int8Linear":
        return cls(lin.weight, lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x.float().contiguous(), self.packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


INT8_BLOCK_ROWS = 16384  # output rows per block of an int8 vocabulary projection


class BlockedInt8Linear:
    """A vocabulary-wide ``Int8Linear`` as blocks of ``rows`` output rows, written into one reusable tensor.

    Why: fbgemm returns a fresh (n, V) float32 tensor per call, and at NLLB-200's 256k rows a fresh 64 MiB
    tensor per decoding step costs page faults. Measured, NLLB-200-600M shape, 16 sentences, beam 4, 1 thread,
    alternating in one process: 15.8 s whole, 15.0 / 14.8 / 14.5 s in 4096 / 16384 / 32768-row blocks."""

    def __init__(self, weight: torch.Tensor, rows: int = INT8_BLOCK_ROWS) -> None:
        self.out_features = weight.size(0)
        self.blocks = [Int8Linear(weight[j : j + rows]) for j in range(0, self.out_features, rows)]

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        n = x.size(0)
        if out is None or out.shape != (n, self.out_features):
            out = x.new_empty(n, self.out_features, dtype=torch.float32)
        j = 0
        for block in self.blocks:
            k = block.out_features
            out[:, j : j + k] = block(x)
            j += k
        return out


def int8_output_projection(weight: torch.Tensor) -> Int8Linear | BlockedInt8Linear:
    """The decoder's output projection in int8: blocked when wider than one block (``BlockedInt8Linear``)."""
    return BlockedInt8Linear(weight) if weight.size(0) > INT8_BLOCK_ROWS else Int8Linear(weight, None)


class Int8Experts:
    """An MoE layer's runner (``MoELayer.runner``) over int8 experts: per expert fc1 and fc2 as ``Int8Linear``.

    Each expert is quantised on its own, a scale per row of its fc1 / fc2, so one expert's range never
    coarsens another's. Called like ``Experts``: rows grouped by expert, ``counts[e]`` each."""

    def __init__(self, stacked: Sequence[torch.Tensor]) -> None:
        w1, b1, w2, b2 = (t.detach() for t in stacked)
        self.fc1 = [Int8Linear(w1[e], b1[e]) for e in range(w1.size(0))]
        self.fc2 = [Int8Linear(w2[e], b2[e]) for e in range(w2.size(0))]
        self.out_dim = w2.size(1)
        # int8 weights + a float32 scale and bias per row, for the memory report (``MoEInference.stats``)
        self.bytes = sum(w.numel() + 8 * w.size(0) * w.size(1) for w in (w1, w2))

    def __call__(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        y = x.new_empty(x.size(0), self.out_dim, dtype=torch.float32)
        start = 0
        for e, n in enumerate(counts):
            if n:
                sl = slice(start, start + n)
                y[sl] = self.fc2[e](self.fc1[e](x[sl]).relu_())
                start += n
        return y


def quantize_linears_(model: nn.Module) -> int:
    """Replace the ``nn.Linear`` projections of attention blocks and dense FFNs by ``Int8Linear``, in place.

    Returns how many were replaced. The float32 matrices are dropped (the model is for decoding only)."""
    n = 0
    for module in list(model.modules()):
        if not isinstance(module, (Attention, FeedForward)):
            continue
        for name, child in list(module.named_children()):
            if type(child) is nn.Linear:
                setattr(module, name, Int8Linear.from_linear(child))
                n += 1
    return n
