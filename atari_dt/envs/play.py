"""Play one episode of a policy in a single env and record what the agent saw."""

from __future__ import annotations

from typing import Any

import numpy as np

from atari_dt.envs.episode import RecordedEpisode
from atari_dt.envs.policies import Policy, StepInput


def play_episode(
    env: Any, policy: Policy, *, seed: int, max_steps: int | None = None
) -> RecordedEpisode:
    """Reset ``env`` with ``seed``, play ``policy`` until the episode ends, record it.

    The policy gets ``numpy.random.default_rng(seed)`` at reset, so an episode is a pure
    function of (env settings, policy, seed).

    Args:
        env: a single gymnasium env from :func:`atari_dt.envs.make_env` (frames uint8 [84, 84]).
        policy: any :class:`Policy`.
        seed: seeds the env's reset (ALE, sticky actions) and the policy's generator.
        max_steps: stop after this many steps even if the episode goes on (the episode is then
            returned with ``terminated=False``); None plays to the end (the env has its own cap).

    Returns:
        the :class:`RecordedEpisode` (frames, actions, raw rewards, RAM).
    """
    frame, _ = env.reset(seed=seed)
    policy.reset(np.random.default_rng(seed))
    ale = env.unwrapped.ale
    meanings = tuple(env.unwrapped.get_action_meanings())
    frames, actions, rewards, rams = [], [], [], []
    reward, terminated = 0.0, False
    while max_steps is None or len(actions) < max_steps:
        ram = ale.getRAM()
        action = policy.act(StepInput(frame, ram, reward, len(actions), meanings))
        frames.append(frame)
        rams.append(ram)
        frame, reward, term, trunc, _ = env.step(action)
        actions.append(action)
        rewards.append(float(reward))
        if term or trunc:
            terminated = True
            break
    return RecordedEpisode(
        frames=np.stack(frames).astype(np.uint8),
        actions=np.array(actions, dtype=np.int64),
        rewards=np.array(rewards, dtype=np.float32),
        ram=np.stack(rams).astype(np.uint8),
        terminated=terminated,
    )
