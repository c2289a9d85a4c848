"""Decoding (beam search, sampling), batch translation jobs and export."""
