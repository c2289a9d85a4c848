"""Corpora, language codes, SentencePiece, dictionaries and binarized datasets."""
