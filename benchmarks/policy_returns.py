"""Returns of the behaviour policies on real rollouts: random vs the scripted RAM experts (plain
and epsilon-greedy), under the ``dqn_replay`` preset (sticky actions 0.25, frame skip 4, raw game
rewards, episode end at game over or 27,000 agent steps).

Every policy plays the same episode seeds (``--seed`` .. ``--seed + episodes - 1``); episodes run
in ``--workers`` processes. Prints a markdown table (and the command that made it).

Run: ``python benchmarks/policy_returns.py`` (2-3 minutes on 2 cores), or e.g.
``python benchmarks/policy_returns.py --episodes 3 --games Breakout --max-steps 2000``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from atari_dt.envs.dqn_replay import make_dqn_replay_env
from atari_dt.envs.experts import make_expert
from atari_dt.envs.games import canonical_game
from atari_dt.envs.play import play_episode
from atari_dt.envs.policies import EpsilonPolicy, Policy, RandomPolicy


@dataclass(frozen=True)
class Job:
    """One episode to play."""

    game: str
    policy: str  # "random", "expert" or "expert eps=<float>"
    seed: int
    max_steps: int | None


@dataclass(frozen=True)
class Outcome:
    job: Job
    episode_return: float
    length: int
    capped: bool  # stopped by --max-steps (not game over nor the env's own 27,000-step limit)


def build_policy(game: str, label: str) -> Policy:
    """The policy a table row label stands for."""
    if label == "random":
        return RandomPolicy()
    if label == "expert":
        return make_expert(game)
    if label.startswith("expert eps="):
        return EpsilonPolicy(make_expert(game), float(label.removeprefix("expert eps=")))
    raise ValueError(f"unknown policy label {label!r}")


def play(job: Job) -> Outcome:
    """Play one episode in a fresh env (run in a worker process)."""
    env = make_dqn_replay_env(job.game)
    try:
        episode = play_episode(
            env, build_policy(job.game, job.policy), seed=job.seed, max_steps=job.max_steps
        )
    finally:
        env.close()
    length = len(episode.actions)
    capped = job.max_steps is not None and length >= job.max_steps and not episode.terminated
    return Outcome(job, float(episode.rewards.sum()), length, capped)


def table(outcomes: list[Outcome], labels: list[str], games: list[str]) -> str:
    """Markdown table, one row per (game, policy), in the order given."""
    lines = [
        "| game | policy | episodes | return mean ± std | min | max | mean length |",
        "|---|---|---|---|---|---|---|",
    ]
    for game in games:
        for label in labels:
            rows = [o for o in outcomes if o.job.game == game and o.job.policy == label]
            returns = np.array([o.episode_return for o in rows])
            lengths = np.array([o.length for o in rows])
            capped = sum(o.capped for o in rows)
            episodes = f"{len(rows)}" + (f" ({capped} capped)" if capped else "")
            lines.append(
                f"| {game} | {label} | {episodes} | {returns.mean():.1f} ± {returns.std():.1f} "
                f"| {returns.min():.0f} | {returns.max():.0f} | {lengths.mean():.0f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=10, help="episodes per policy and game")
    parser.add_argument("--games", nargs="+", default=["Pong", "Breakout", "Seaquest"])
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="per-episode agent-step cap (default: none beyond the env's 27,000)",
    )
    parser.add_argument("--epsilons", type=float, nargs="*", default=[0.1, 0.3])
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.workers < 1:
        parser.error("--episodes and --workers must be >= 1")
    if args.max_steps is not None and args.max_steps < 1:
        parser.error("--max-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    games = [canonical_game(g) for g in args.games]
    labels = ["random", "expert", *(f"expert eps={e:g}" for e in args.epsilons)]
    jobs = [
        Job(game, label, args.seed + i, args.max_steps)
        for game in games
        for label in labels
        for i in range(args.episodes)
    ]
    # longest first (Pong experts) so the workers finish together
    jobs.sort(key=lambda j: (j.game != "Pong", j.policy == "random"))
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        outcomes = list(pool.map(play, jobs))
    elapsed = time.perf_counter() - start
    command = shlex.join(["python", "benchmarks/policy_returns.py", *sys.argv[1:]])
    cap = f"{args.max_steps} agent steps" if args.max_steps else "none (env limit 27,000)"
    print(f"Command: `{command}`\n")
    print(
        f"dqn_replay preset (sticky actions 0.25, frame skip 4), raw game rewards; "
        f"episode seeds {args.seed}..{args.seed + args.episodes - 1} for every policy; "
        f"per-episode step cap: {cap}.\n"
    )
    print(table(outcomes, labels, games))
    total_steps = sum(o.length for o in outcomes)
    print(f"\n{total_steps:,} agent steps in {elapsed:.0f} s with {args.workers} workers.")


if __name__ == "__main__":
    main()
