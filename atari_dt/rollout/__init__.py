"""Rollouts: a batched DT agent with cached state embeddings, evaluation, sweeps, videos."""
