"""File formats shared across stages: checkpoints, the training log, the names of ``.hyp`` files."""
