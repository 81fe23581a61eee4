"""The RTG-extrapolation study of one trained run: behaviour at targets in and beyond the
data, the transformer's mechanism for the RTG, and the pixels, for the same model, states and
returns. ``run_study`` composes the library's analyses into one frozen ``Study``; the summary
and the report only present it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.analysis.scan_report import ScanReport
from atari_dt.analysis.steering import RtgDirection, SteeringEffect
from atari_dt.rollout.sweep import SweepResult
from atari_dt.study.behaviour import ExtrapolationGain, PolicyDivergence
from atari_dt.study.config import StudyConfig
from atari_dt.study.grid import Landmarks
from atari_dt.study.imitation import Imitation
from atari_dt.study.mechanism import RtgPatching
from atari_dt.study.pixels import PixelStudy


@dataclass(frozen=True)
class SteeredRollouts:
    """Rollouts at ``target`` with ``scale`` x the RTG direction added at ``hook``, next to the
    same target unsteered: ``steered``/``plain`` achieved returns per episode."""

    target: float
    hook: str
    scale: float
    steered: list[float]
    plain: list[float]


@dataclass(frozen=True)
class Study:
    """Everything one study found (each field is the named analysis's result; returns in the
    run's ``reward_units``). ``computed`` and ``reused`` name the parts run now and the parts
    taken from the cache."""

    config: StudyConfig
    provenance: dict[str, Any]
    marks: Landmarks
    grid: np.ndarray
    sweep: SweepResult
    gains: dict[str, ExtrapolationGain | None]
    action_histograms: np.ndarray
    scan: ScanReport
    divergence: PolicyDivergence
    imitation: Imitation | None
    patching: RtgPatching
    carrier_hook: str | None
    """The residual hook where the RTG has reached the decision, or None (patching found none)."""
    direction: RtgDirection
    steering: SteeringEffect
    steered: SteeredRollouts | None
    pixels: PixelStudy
    computed: list[str]
    reused: list[str]


def _provenance(run: Any, config: StudyConfig, cap: int) -> dict[str, Any]:
    from atari_dt.config import config_to_dict

    return {
        "run": str(Path(run.directory).resolve()),
        "checkpoint_step": run.metadata.get("step"),
        "game": run.game,
        "store": str(Path(run.store.path).resolve()),
        "store_fingerprint": run.store.fingerprint(),
        "reward_units": run.config.data.reward_units,
        "max_return_quantile": run.config.data.max_return_quantile,
        "max_episode_steps": cap,
        "run_config": config_to_dict(run.config),
        "study_config": asdict(config),
    }


def run_study(
    run: Any, config: StudyConfig, *, cache_dir: Path, force: bool = False, progress: bool = True
) -> Study:
    """The study of ``run`` (``load_run``) with ``config``; finished parts are cached in
    ``cache_dir`` and reused by a later call with the same inputs (``force``: recompute).
    When raising the RTG moves no policy, the mechanism parts say so instead of failing.

    Raises:
        UserError: a behaviour-cloning run (no RTG to study) or bad settings (``StudyConfig``).
    """
    from atari_dt.errors import UserError
    from atari_dt.study.cache import StudyCache, model_digest
    from atari_dt.study.grid import landmarks, target_grid

    model = run.model.eval()
    if model.cfg.behaviour_cloning:
        raise UserError(f"{run.directory}: a behaviour-cloning run has no RTG to study")
    cap = config.max_episode_steps or run.config.eval.max_episode_steps
    provenance = _provenance(run, config, cap)
    identity = {"model": model_digest(model), "store": provenance["store_fingerprint"]}
    cache = StudyCache(cache_dir, identity, force=force)
    complete = run.store.returns[np.asarray(run.store.complete, dtype=bool)]
    marks = landmarks(complete if len(complete) else run.store.returns, run.train_returns)
    parts = _Parts(run, config, cache, marks, target_grid(marks, config.targets), cap, progress)
    rollouts = parts.rollouts()
    sweep, gains, histograms = parts.behaviour(rollouts)
    scan, divergence = parts.scan()
    patching = parts.patching()
    carrier = patching.carrier_hook(model.cfg)
    direction, steering = parts.steering()
    steer = config.steer and carrier
    return Study(
        config=config,
        provenance=provenance,
        marks=marks,
        grid=parts.grid,
        sweep=sweep,
        gains=gains,
        action_histograms=histograms,
        scan=scan,
        divergence=divergence,
        imitation=parts.imitation(rollouts),
        patching=patching,
        carrier_hook=carrier,
        direction=direction,
        steering=steering,
        steered=parts.steered(direction, carrier, rollouts) if steer else None,
        pixels=parts.pixels(patching, direction, carrier),
        computed=cache.computed,
        reused=cache.reused,
    )


@dataclass
class _Parts:
    """The study's parts, each computed through the cache."""

    run: Any
    config: StudyConfig
    cache: Any
    marks: Landmarks
    grid: np.ndarray
    cap: int
    progress: bool

    @property
    def units(self) -> str:
        return self.run.config.data.reward_units

    def _contexts(self, n: int, offset: int) -> Any:
        return self.run.sample_contexts(n, seed=self.config.seed + offset)

    def _rollout_params(self) -> dict[str, Any]:
        ev = self.run.config.eval
        return {
            "episodes": self.config.episodes,
            "cap": self.cap,
            "seed": self.config.seed,
            "units": self.units,
            "preset": ev.preset,
            "sample": ev.sample,
            "temperature": ev.temperature,
            "envs": ev.envs,
            # Only a bf16 study adds the key: float32 keeps the rollouts cached before it.
            **({"precision": self.precision} if self.precision != "float32" else {}),
        }

    @property
    def precision(self) -> str:
        return self.config.precision or self.run.config.eval.precision

    @property
    def threads(self) -> int:
        """torch threads while playing (the rest of the study keeps the caller's)."""
        return self.run.config.eval.threads if self.config.threads is None else self.config.threads

    def _play(self, target: float) -> list[Any]:
        from atari_dt.compute import torch_threads
        from atari_dt.study.behaviour import play_target

        ev = self.run.config.eval
        with torch_threads(self.threads):
            return play_target(
                self.run.model,
                self.run.game,
                target,
                self.config.episodes,
                reward_units=self.units,
                max_episode_steps=self.cap,
                preset=ev.preset,
                seed=self.config.seed,
                sample=ev.sample,
                temperature=ev.temperature,
                n_envs=ev.envs,
                precision=self.precision,
            )

    def rollouts(self) -> dict[float, list[Any]]:
        """Target -> its episodes (actions and RAM recorded), one cached part per target."""
        from tqdm.auto import tqdm

        out = {}
        for target in tqdm(
            self.grid, desc="study rollouts", unit="target", disable=not self.progress
        ):
            t = float(target)
            params = {"target": t, **self._rollout_params()}
            out[t] = self.cache.get(f"rollouts@{t!r}", params, lambda t=t: self._play(t))
        return out

    def behaviour(
        self, rollouts: dict[float, list[Any]]
    ) -> tuple[SweepResult, dict[str, ExtrapolationGain | None], np.ndarray]:
        from atari_dt.rollout.sweep import summarise
        from atari_dt.study.behaviour import action_histograms, extrapolation_gain

        ev = self.run.config.eval
        sweep = summarise(
            [e for episodes in rollouts.values() for e in episodes],
            game=self.run.game,
            reward_units=self.units,
            data_return_range=(self.marks.data_min, self.marks.data_max),
            sample=ev.sample,
            temperature=ev.temperature,
        )
        gains = {
            "data_max": extrapolation_gain(sweep, self.marks.data_max, "the data's best return")
        }
        if self.marks.held_out:
            gains["train_max"] = extrapolation_gain(
                sweep, self.marks.train_max, "the best training return"
            )
        return sweep, gains, action_histograms(sweep)

    def scan(self) -> tuple[ScanReport, PolicyDivergence]:
        from atari_dt.analysis.scan_report import scan_report
        from atari_dt.study.behaviour import policy_divergence
        from atari_dt.study.grid import scan_grid

        fine = scan_grid(self.grid)
        params = {"grid": fine.tolist(), "contexts": self.config.contexts, "seed": self.config.seed}
        report = self.cache.get(
            "scan",
            params,
            lambda: scan_report(
                self.run.model,
                self._contexts(self.config.contexts, 0),
                fine,
                reference_rtg=self.marks.train_max,
                data_returns=self.run.train_returns,
            ),
        )
        return report, policy_divergence(report.scan, self.marks.train_max, seed=self.config.seed)

    def _low_high(self) -> tuple[float, float]:
        """The in-distribution and the out-of-distribution RTG of patching and steering (the
        grid's bottom when the training median is its top, as with ``--targets`` at or below it)."""
        top = float(self.grid[-1])
        low = self.marks.train_median if self.marks.train_median < top else float(self.grid[0])
        return low, top

    def patching(self) -> RtgPatching:
        from atari_dt.study.mechanism import rtg_patching

        n, (low, high) = self.config.patch_contexts, self._low_high()
        params = {"contexts": n, "low": low, "high": high, "seed": self.config.seed}
        return self.cache.get(
            "patching",
            params,
            lambda: rtg_patching(
                self.run.model, self._contexts(n, 0), low, high, seed=self.config.seed
            ),
        )

    def _direction_params(self) -> dict[str, Any]:
        low, high = self._low_high()
        return {
            "contexts": self.config.contexts,
            "low": low,
            "high": high,
            "seed": self.config.seed,
        }

    def steering(self) -> tuple[RtgDirection, SteeringEffect]:
        from atari_dt.analysis.steering import rtg_direction, steering_effect

        low, high = self._low_high()
        measured, held_out = _split_held_out(self._contexts(2 * self.config.contexts, 0))
        params = self._direction_params()
        direction = self.cache.get(
            "rtg_direction", params, lambda: rtg_direction(self.run.model, measured, low, high)
        )
        effect = self.cache.get(
            "steering",
            {**params, "scale": self.config.steer_scale},
            lambda: steering_effect(
                self.run.model,
                held_out,
                direction,
                scale=self.config.steer_scale,
                seed=self.config.seed,
            ),
        )
        return direction, effect

    def imitation(self, rollouts: dict[float, list[Any]]) -> Imitation | None:
        from atari_dt.study.imitation import (
            action_meanings,
            data_agreement,
            nearest_behaviour,
            rollout_agreement,
        )

        store = self.run.store
        expert, data = self.cache.get(
            "data_agreement", {}, lambda: data_agreement(store, np.arange(len(store)))
        )
        if expert is None or not data:
            return None
        meanings = action_meanings(self.run.game)
        agreements = [
            rollout_agreement(self.run.game, expert, rollouts[float(t)], meanings)
            for t in self.grid
        ]
        imitated = [nearest_behaviour(data, a.mean) for a in agreements]
        targets = [float(t) for t in self.grid]
        return Imitation(str(expert["name"]), data, targets, agreements, imitated)

    def steered(
        self, direction: RtgDirection, hook: str, rollouts: dict[float, list[Any]]
    ) -> SteeredRollouts:
        from atari_dt.analysis.steering import steering

        target, row = self.marks.train_median, direction.index(hook)

        def play() -> list[float]:
            with steering(self.run.model, hook, direction.directions[row], self.config.steer_scale):
                return [p.achieved(self.units) for p in self._play(target)]

        params = {
            "hook": hook,
            "scale": self.config.steer_scale,
            "target": target,
            "direction": self._direction_params(),
            **self._rollout_params(),
        }
        steered = self.cache.get("steered_rollouts", params, play)
        plain = [p.achieved(self.units) for p in rollouts[float(target)]]
        return SteeredRollouts(target, hook, self.config.steer_scale, steered, plain)

    def pixels(
        self, patching: RtgPatching, direction: RtgDirection, carrier: str | None
    ) -> PixelStudy:
        from atari_dt.study.pixels import pixel_study

        marks, top = self.marks, float(self.grid[-1])
        beyond = self.grid[self.grid > marks.data_max]
        grid = np.unique([marks.train_median, marks.train_max, marks.data_max, *beyond[:1], top])
        mechanism, head = {}, None
        if patching.contexts and carrier is not None:
            ((head, _, _),) = patching.top_heads(1)
            mechanism = _mechanism_targets(
                self.run.model, head, direction, carrier, *self._low_high()
            )
        params = {
            "grid": grid.tolist(),
            "contexts": self.config.pixel_contexts,
            "n_steps": self.config.n_steps,
            "head": head,
            "carrier": carrier,
            "direction": self._direction_params(),
            "seed": self.config.seed,
        }
        return self.cache.get(
            "pixels",
            params,
            lambda: pixel_study(
                self.run.model,
                self._contexts(self.config.pixel_contexts, 2),
                grid,
                marks.train_max,
                mechanism=mechanism,
                n_steps=self.config.n_steps,
                progress=self.progress,
            ),
        )


def _split_held_out(contexts: Any) -> tuple[Any, Any]:
    """Two disjoint halves of ``contexts``' distinct windows (by store row, alternating): the
    RTG direction is measured on one and steering checked on the other.

    Raises:
        UserError: fewer than 4 distinct windows (a half needs 2 for an interval).
    """
    from atari_dt.errors import UserError

    rows = contexts.rows if contexts.rows is not None else np.arange(len(contexts))
    _, first = np.unique(np.asarray(rows), return_index=True)
    order = np.sort(first)
    if len(order) < 4:
        raise UserError(
            f"the steering check needs at least 4 distinct context windows, got {len(order)}; "
            "raise --contexts"
        )
    return contexts[order[0::2]], contexts[order[1::2]]


def _mechanism_targets(
    model: Any, head: str, direction: RtgDirection, carrier: str, low: float, high: float
) -> dict[str, Any]:
    """Label -> ``(context, action) -> metric``: the top head's direct path to the logit
    difference the RTG moves most, and the residual at the carrier hook projected on the RTG
    direction there (at the decision's state token)."""
    import torch

    from atari_dt.analysis.scan import scanned_rtg
    from atari_dt.attribution.hook_targets import HookTarget, head_logit_target
    from atari_dt.study.mechanism import rtg_contrast

    layer, index = (int(x) for x in head[1:].split("H"))

    def head_target(context: Any, action: int) -> Any:
        with torch.no_grad():
            high_logits = model(context.with_rtg(scanned_rtg(context, high, "constant")))[0, -1]
            low_logits = model(context.with_rtg(scanned_rtg(context, low, "constant")))[0, -1]
        contrast = rtg_contrast(high_logits, low_logits)
        if contrast is None:
            return head_logit_target(model, layer, index, action)
        return head_logit_target(model, layer, index, contrast.action, contrast.other_action)

    vector = direction.last_state[direction.index(carrier)]
    unit = vector / vector.norm().clamp(min=1e-12)

    def direction_target(context: Any, action: int) -> Any:
        return HookTarget(hook=carrier, direction=unit, label=f"{carrier} on the RTG direction")

    return {
        f"{head} (direct path to the RTG's logit difference)": head_target,
        f"residual at {carrier} on the RTG direction": direction_target,
    }
