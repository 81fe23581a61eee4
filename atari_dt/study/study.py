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
    carrier_hook: str
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

    Raises:
        UserError: a behaviour-cloning run (no RTG to study), bad settings (``StudyConfig``),
            or an RTG change that moves no context's policy.
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
    store = run.store
    complete = store.returns[np.asarray(store.complete, dtype=bool)]
    marks = landmarks(complete if len(complete) else store.returns, run.train_returns)
    grid = target_grid(marks, config.targets)
    parts = _Parts(run, config, cache, marks, grid, cap, progress)
    sweep, gains, histograms = parts.behaviour()
    scan, divergence = parts.scan()
    patching = parts.patching()
    carrier = patching.carrier_hook(model.cfg.tokens_per_step)
    direction, steering = parts.steering()
    return Study(
        config=config,
        provenance=provenance,
        marks=marks,
        grid=grid,
        sweep=sweep,
        gains=gains,
        action_histograms=histograms,
        scan=scan,
        divergence=divergence,
        imitation=parts.imitation(sweep),
        patching=patching,
        carrier_hook=carrier,
        direction=direction,
        steering=steering,
        steered=parts.steered(direction, carrier) if config.steer else None,
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

    def behaviour(self) -> tuple[SweepResult, dict[str, ExtrapolationGain | None], np.ndarray]:
        from tqdm.auto import tqdm

        from atari_dt.rollout.sweep import summarise
        from atari_dt.study.behaviour import action_histograms, extrapolation_gain, play_target

        results = []
        for target in tqdm(
            self.grid, desc="study rollouts", unit="target", disable=not self.progress
        ):
            params = {"target": float(target), **self._rollout_params()}
            results += self.cache.get(
                f"rollouts-{target:g}",
                params,
                lambda target=target: play_target(
                    self.run.model,
                    self.run.game,
                    float(target),
                    self.config.episodes,
                    reward_units=self.units,
                    max_episode_steps=self.cap,
                    seed=self.config.seed,
                ),
            )
        sweep = summarise(
            results,
            game=self.run.game,
            reward_units=self.units,
            data_return_range=(self.marks.data_min, self.marks.data_max),
            sample=True,
            temperature=1.0,
        )
        gains = {
            "data_max": extrapolation_gain(sweep, self.marks.data_max, "the data's best return")
        }
        if self.marks.held_out:
            gains["train_max"] = extrapolation_gain(
                sweep, self.marks.train_max, "the best training return"
            )
        return sweep, gains, action_histograms(sweep)

    def _rollout_params(self) -> dict[str, Any]:
        return {"episodes": self.config.episodes, "cap": self.cap, "seed": self.config.seed}

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

    def patching(self) -> RtgPatching:
        from atari_dt.study.mechanism import rtg_patching

        n = self.config.patch_contexts
        params = {"contexts": n, "low": self.marks.train_median, "high": float(self.grid[-1])}
        return self.cache.get(
            "patching",
            {**params, "seed": self.config.seed},
            lambda: rtg_patching(
                self.run.model,
                self._contexts(n, 0),
                self.marks.train_median,
                float(self.grid[-1]),
                seed=self.config.seed,
            ),
        )

    def steering(self) -> tuple[RtgDirection, SteeringEffect]:
        from atari_dt.analysis.steering import rtg_direction, steering_effect

        low, high = self.marks.train_median, float(self.grid[-1])
        params = {
            "contexts": self.config.contexts,
            "low": low,
            "high": high,
            "seed": self.config.seed,
        }
        direction = self.cache.get(
            "rtg_direction",
            params,
            lambda: rtg_direction(
                self.run.model, self._contexts(self.config.contexts, 0), low, high
            ),
        )
        effect = self.cache.get(
            "steering",
            {**params, "scale": self.config.steer_scale},
            lambda: steering_effect(
                self.run.model,
                self._contexts(self.config.contexts, 1),  # held out: another draw
                direction,
                scale=self.config.steer_scale,
                seed=self.config.seed,
            ),
        )
        return direction, effect

    def imitation(self, sweep: SweepResult) -> Imitation | None:
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
        rollouts = []
        for target in self.grid:
            episodes = self.cache.get(
                f"rollouts-{target:g}", {"target": float(target), **self._rollout_params()}, list
            )
            rollouts.append(rollout_agreement(self.run.game, expert, episodes, meanings))
        imitated = [nearest_behaviour(data, a.mean) for a in rollouts]
        return Imitation(
            str(expert["name"]), data, [float(t) for t in self.grid], rollouts, imitated
        )

    def steered(self, direction: RtgDirection, hook: str) -> SteeredRollouts:
        from atari_dt.analysis.steering import steering
        from atari_dt.study.behaviour import play_target

        target = self.marks.train_median
        row = direction.index(hook)

        def play() -> list[float]:
            with steering(self.run.model, hook, direction.directions[row], self.config.steer_scale):
                played = play_target(
                    self.run.model,
                    self.run.game,
                    target,
                    self.config.episodes,
                    reward_units=self.units,
                    max_episode_steps=self.cap,
                    seed=self.config.seed,
                )
            return [p.achieved(self.units) for p in played]

        params = {"hook": hook, "scale": self.config.steer_scale, **self._rollout_params()}
        steered = self.cache.get("steered_rollouts", {**params, "target": target}, play)
        plain = self.cache.get(
            f"rollouts-{target:g}", {"target": float(target), **self._rollout_params()}, list
        )
        return SteeredRollouts(
            target, hook, self.config.steer_scale, steered, [p.achieved(self.units) for p in plain]
        )

    def pixels(self, patching: RtgPatching, direction: RtgDirection, carrier: str) -> PixelStudy:
        from atari_dt.study.pixels import pixel_study

        marks, top = self.marks, float(self.grid[-1])
        grid = np.unique(
            [marks.train_median, marks.train_max, marks.data_max, 2 * marks.data_max, top]
        )
        ((head, _, _),) = patching.top_heads(1)
        params = {
            "grid": grid.tolist(),
            "contexts": self.config.pixel_contexts,
            "n_steps": self.config.n_steps,
            "head": head,
            "carrier": carrier,
            "seed": self.config.seed,
        }
        mechanism = _mechanism_targets(
            self.run.model, head, direction, carrier, marks.train_median, top
        )
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
