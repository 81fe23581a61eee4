"""atari-dt: mechanistic interpretability of Decision Transformers that play Atari from pixels.

Sub-packages follow the pipeline's stages (see DESIGN.md): ``datasets`` (DQN-replay reader,
episode store, context windows), ``envs`` (ALE environments), and the stages built on them.
Importing ``atari_dt`` itself is cheap: torch and friends are imported by the modules that use them.
"""

__version__ = "0.1.0"
