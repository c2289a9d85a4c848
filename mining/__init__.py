"""Bitext mining: LID, filters, sentence encoders, FAISS k-NN, margin scoring, launcher."""
