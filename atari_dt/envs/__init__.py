"""ALE environments with the DQN-replay preprocessing, and small real-data collection."""

from atari_dt.envs.games import canonical_game, env_id

__all__ = ["canonical_game", "env_id"]
