"""Sentence encoders behind one interface: ``encode(sentences, lang) -> float32 [n, d]``, L2-normalised."""

from mining.encoders.base import DEFAULT_ENCODER, Encoder, encoder_space, l2_normalize
from mining.encoders.factory import load_encoder

__all__ = ["DEFAULT_ENCODER", "Encoder", "encoder_space", "l2_normalize", "load_encoder"]
