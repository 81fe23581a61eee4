"""Transformer analysis with TransformerLens hooks: RTG scan and saturation, direct logit
attribution, logit lens, activation patching, attention, probes, mean ablation. Pure functions
over a model, context windows and caches; they return data."""
