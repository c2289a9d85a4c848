"""File formats that training and generation share: checkpoints and the training log."""
