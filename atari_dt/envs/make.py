"""ALE environments under named presets, single or vectorised, with identical semantics.

Presets (every value can be overridden; the resolved settings are on ``env.settings``):

* ``dqn_replay`` — how the DQN-replay logs were made (Agarwal et al. 2020): sticky actions 0.25,
  frame skip 4, max-pool over the last two frames, grayscale, 84x84 ``cv2.INTER_AREA``, episode
  end at game over (not life loss), at most 27,000 agent steps, minimal action set, no no-ops.
* ``dt_original_eval`` — the original Decision Transformer's evaluation (Chen et al. 2021): no
  sticky actions and up to 30 random no-ops at reset; the rest as above.

Observations are uint8 ``[84, 84]`` frames (one per step; agents stack them). Rewards are the raw
game rewards; ``info["clipped_reward"]`` carries the DQN-replay clipped one alongside.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from atari_dt.envs.games import canonical_game, env_id

PRESETS: dict[str, dict[str, Any]] = {
    "dqn_replay": {
        "repeat_action_probability": 0.25,
        "frame_skip": 4,
        "screen_size": 84,
        "terminal_on_life_loss": False,
        "noop_max": 0,
        "max_episode_steps": 27_000,
        "full_action_space": False,
    },
    "dt_original_eval": {
        "repeat_action_probability": 0.0,
        "frame_skip": 4,
        "screen_size": 84,
        "terminal_on_life_loss": False,
        "noop_max": 30,
        "max_episode_steps": 27_000,
        "full_action_space": False,
    },
}
PresetName = Literal["dqn_replay", "dt_original_eval"]


def resolve_settings(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The preset's values with ``overrides`` applied, plus ``preset`` itself.

    Raises:
        ValueError: unknown preset or setting (lists the valid ones).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown env preset {preset!r}; valid: {sorted(PRESETS)}")
    unknown = set(overrides) - set(PRESETS[preset])
    if unknown:
        raise ValueError(
            f"unknown env settings {sorted(unknown)}; valid: {sorted(PRESETS[preset])}"
        )
    return {"preset": preset, **PRESETS[preset], **overrides}


def make_env(game: str, preset: PresetName = "dqn_replay", **overrides: Any) -> Any:
    """A single gymnasium env of ``game`` under ``preset`` (gymnasium's ``AtariPreprocessing``).

    Args:
        game: ``Seaquest``, ``seaquest`` or ``ALE/Seaquest-v5``.
        preset: ``dqn_replay`` or ``dt_original_eval``.
        overrides: preset values to change, e.g. ``repeat_action_probability=0.0``.

    Returns:
        the env; ``env.settings`` holds the resolved settings (recorded with collected data).

    Raises:
        ValueError: unknown game, preset or setting.
    """
    import ale_py

    settings = resolve_settings(preset, overrides)
    gym.register_envs(ale_py)
    env = gym.make(
        env_id(game),
        frameskip=1,  # AtariPreprocessing skips frames and max-pools the last two itself
        repeat_action_probability=settings["repeat_action_probability"],
        full_action_space=settings["full_action_space"],
        # The emulator's own cap, in frames, must not end episodes before TimeLimit does.
        max_num_frames_per_episode=settings["max_episode_steps"] * settings["frame_skip"],
        max_episode_steps=None,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=settings["noop_max"],
        frame_skip=settings["frame_skip"],
        screen_size=settings["screen_size"],
        terminal_on_life_loss=settings["terminal_on_life_loss"],
        grayscale_obs=True,
        scale_obs=False,
    )
    env = gym.wrappers.TimeLimit(env, max_episode_steps=settings["max_episode_steps"])
    return _ClippedRewardInfo(env, {"game": canonical_game(game), **settings})


class _ClippedRewardInfo(gym.Wrapper):
    """Adds ``info["clipped_reward"]`` and exposes the resolved ``settings``."""

    def __init__(self, env: Any, settings: dict[str, Any]) -> None:
        super().__init__(env)
        self.settings = settings

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        info["clipped_reward"] = float(np.clip(reward, -1.0, 1.0))
        return frame, reward, terminated, truncated, info


class RamInfo(gym.Wrapper):
    """Adds ``info["ram"]``: the 128-byte RAM when the returned frame was shown (the RAM a
    policy sees at its next decision, as ``play_episode`` reads it)."""

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        frame, info = self.env.reset(**kwargs)
        return frame, {**info, "ram": self.env.unwrapped.ale.getRAM().copy()}

    def step(self, action: int) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        frame, reward, terminated, truncated, info = self.env.step(action)
        return (
            frame,
            reward,
            terminated,
            truncated,
            {**info, "ram": self.env.unwrapped.ale.getRAM().copy()},
        )


def make_vector_env(
    game: str,
    num_envs: int,
    preset: PresetName = "dqn_replay",
    *,
    backend: Literal["ale", "subprocess"] = "ale",
    ram: bool = False,
    **overrides: Any,
) -> Any:
    """``num_envs`` copies of :func:`make_env`'s env stepped together (gymnasium vector API,
    next-step autoreset): observations uint8 ``[N, 84, 84]``, raw rewards ``[N]``,
    ``info["clipped_reward"]`` ``[N]``.

    Backends: ``ale`` (ale-py's C++ ``AtariVectorEnv``, threads; no RAM access) or
    ``subprocess`` (gymnasium ``AsyncVectorEnv`` of single envs). With sticky actions off, the
    same seeds and the same actions, both give the single env's frames and rewards exactly.
    ``ram``: also ``info["ram"]`` ``[N, 128]`` (``RamInfo``; the subprocess backend only).

    Raises:
        ValueError: unknown backend, preset or setting; ``terminal_on_life_loss`` with ``ale``.
    """
    settings = resolve_settings(preset, overrides)
    if ram and backend != "subprocess":
        raise ValueError("RAM in the info needs backend='subprocess' (AtariVectorEnv has none)")
    if backend == "subprocess":

        def factory() -> Any:
            env = make_env(game, preset, **overrides)
            return RamInfo(env) if ram else env

        return gym.vector.AsyncVectorEnv([factory] * num_envs)
    if backend != "ale":
        raise ValueError(f"unknown vector backend {backend!r}; valid: 'ale', 'subprocess'")
    return _AleVectorEnv(game, num_envs, {"game": canonical_game(game), **settings})


class _AleVectorEnv:
    """ale-py's ``AtariVectorEnv`` configured to a preset, frames unstacked, raw rewards."""

    def __init__(self, game: str, num_envs: int, settings: dict[str, Any]) -> None:
        from ale_py import AtariVectorEnv

        if settings["terminal_on_life_loss"]:
            raise ValueError("terminal_on_life_loss is not supported by the 'ale' backend")
        self.settings = settings
        self.num_envs = num_envs
        self._env = AtariVectorEnv(
            _rom_id(game),
            num_envs,
            repeat_action_probability=settings["repeat_action_probability"],
            full_action_space=settings["full_action_space"],
            frameskip=settings["frame_skip"],
            maxpool=True,
            grayscale=True,
            img_height=settings["screen_size"],
            img_width=settings["screen_size"],
            stack_num=1,  # agents stack frames themselves
            noop_max=settings["noop_max"],
            max_num_frames_per_episode=settings["max_episode_steps"] * settings["frame_skip"],
            reward_clipping=False,  # raw rewards; the clipped ones go in info
            use_fire_reset=False,
            episodic_life=False,
        )
        self.single_action_space = self._env.single_action_space
        self.action_space = self._env.action_space

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        frames, info = self._env.reset(seed=seed)
        return frames[:, 0], info

    def step(self, actions: np.ndarray) -> tuple[Any, ...]:
        frames, rewards, terminated, truncated, info = self._env.step(np.asarray(actions))
        info["clipped_reward"] = np.clip(rewards, -1.0, 1.0)
        return frames[:, 0], rewards, terminated, truncated, info

    def close(self) -> None:
        # Dropping the reference frees the emulators and joins their threads now, even while a
        # traceback still holds this wrapper; a second close is a no-op.
        if self._env is not None:
            self._env.close()
            self._env = None


def _rom_id(game: str) -> str:
    """ale-py's ROM id, e.g. ``SpaceInvaders`` -> ``space_invaders``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", canonical_game(game)).lower()
