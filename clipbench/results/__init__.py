"""Where results go: the append-only results CSV, the run directory, W&B, and the terminal table."""
