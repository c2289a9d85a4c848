"""Evaluation: sacrebleu metrics, added toxicity, translate-test baselines, reports."""
