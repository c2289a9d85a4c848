"""Sentence encoders behind one interface: ``encode(sentences, lang) -> float32 [n, d]``, L2-normalised."""
