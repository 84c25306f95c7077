"""Training code: losses and single training steps (no data loading or loops here)."""
