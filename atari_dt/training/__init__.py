"""Training: the original DT recipe on CPU or GPU, exact resume, torchrun DDP."""
