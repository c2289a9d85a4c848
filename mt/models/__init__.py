"""nn.Modules only: the Transformer, its FFN variants (dense, MoE), adapters."""
