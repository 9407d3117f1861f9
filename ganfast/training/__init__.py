"""Training engine: losses, regularizers, EMA, checkpoints, the loop."""
