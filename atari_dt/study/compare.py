"""Several runs' studies side by side (games, seeds, held-out fractions): read each run's
``study/summary.json`` into one :class:`ComparedRun` of named fields, with its sweep in
human-normalised units (:mod:`atari_dt.study.scores`), whether its return follows the target
(a rank test), its extrapolation gains, saturation, where its RTG is read in, and its token and
object shares. Returns of different games are set on one scale by the data's own range:
``(x - data_min) / (data_max - data_min)`` puts the data's worst return at 0 and its best at
1 whatever the game's scale or sign (Pong's returns are mostly negative). Pure:
``compare_runs`` reads, the table and the page only present."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.errors import UserError
from atari_dt.intervals import mean_interval

SUMMARY = "summary.json"
LEVEL = 0.05  # one-sided test level of "the return rises with the target"


@dataclass(frozen=True)
class ComparedRun:
    """One run's study, read back. Returns are in ``reward_units``; ``normalised*`` are
    human-normalised percentages of the same episodes' *raw* scores (NaN without a baseline).
    The data's landmarks are over its complete episodes."""

    label: str
    study_dir: Path
    game: str
    seed: int | None
    """The training seed (the run config's ``train.seed``)."""
    held_out: float | None
    """``data.max_return_quantile``: episodes above this return quantile were held out."""
    reward_units: str
    data_min: float
    data_max: float
    train_max: float
    targets: np.ndarray  # (G,) the sweep's targets
    achieved: np.ndarray  # (G,) mean achieved return
    achieved_interval: np.ndarray  # (G, 2) its 95% t interval
    normalised: np.ndarray  # (G,) mean human-normalised score (raw game points)
    normalised_interval: np.ndarray  # (G, 2) its 95% t interval
    capped: np.ndarray  # (G,) fraction of the target's episodes that hit the step cap
    follows: tuple[float, float]
    """Spearman's rho of achieved return against target over every episode of the sweep, and
    the one-sided p-value of rho > 0 (``follows_target``)."""
    gain: dict[str, Any] | None
    """The study's gain above the data's best return (value, interval, units), or None."""
    gain_vs_train: dict[str, Any] | None
    """The same above the best training return, when the top was held out."""
    saturation: float | None
    carrier_hook: str | None
    top_head: tuple[str, float] | None
    steering_recovered: float | None
    shares: dict[str, Any]
    verdict: tuple[str, ...]

    @property
    def span(self) -> float | None:
        """``data_max - data_min``, the unit of :meth:`in_data_units` (None if zero)."""
        span = self.data_max - self.data_min
        return span if span > 0 else None

    def in_data_units(self, returns: np.ndarray | float, *, shift: bool = True) -> np.ndarray:
        """``(returns - data_min) / span`` (0: the data's worst, 1: its best); ``shift=False``
        scales a difference (a gain) without shifting it. NaN when the data has no span."""
        values = np.asarray(returns, dtype=np.float64)
        if self.span is None:
            return np.full_like(values, np.nan)
        return ((values - self.data_min) if shift else values) / self.span

    @property
    def at_data_max(self) -> int:
        """Index of the sweep target at the data's best return (the study always plays it)."""
        return int(np.argmin(np.abs(self.targets - self.data_max)))

    @property
    def reference_index(self) -> int:
        """Index of the best training return in ``shares["rtg"]`` (the pixel study's RTGs)."""
        rtg = np.array(self.shares.get("rtg") or [0.0])
        return int(np.argmin(np.abs(rtg - self.shares.get("reference_rtg", 0.0))))


@dataclass(frozen=True)
class Comparison:
    """The runs compared, in the order given."""

    runs: tuple[ComparedRun, ...]

    def table(self) -> list[dict[str, Any]]:
        """One row per run: the numbers the page's table shows (JSON-able, NaN as None)."""
        return [_row(run) for run in self.runs]


def study_dir(path: str | Path) -> Path:
    """The study directory of ``path``: a run directory (its ``study/``) or a study directory
    itself (``atari-dt study --out``)."""
    path = Path(path)
    if (path / SUMMARY).is_file():
        return path
    return path / "study"


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    return path


def missing_studies(paths: list[str | Path]) -> list[Path]:
    """The given runs that have no study yet (no ``summary.json``), each once.

    Raises:
        UserError: a path that does not exist.
    """
    missing = [p for p in map(_existing, paths) if not (study_dir(p) / SUMMARY).is_file()]
    return list(dict.fromkeys(missing))


def compare_runs(paths: list[str | Path]) -> Comparison:
    """Read the studies of ``paths`` (run or study directories).

    Raises:
        UserError: no path, a path that does not exist, a missing study (with the command
            that makes it), or a summary that cannot be read (names the file and what is
            missing).
    """
    if not paths:
        raise UserError("compare needs at least one run directory")
    runs = [_load(Path(p)) for p in paths]
    labels = _labels(runs)
    return Comparison(
        tuple(dataclasses.replace(r, label=label) for r, label in zip(runs, labels, strict=True))
    )


def follows_target(points: list[dict[str, Any]]) -> tuple[float, float]:
    """Spearman's rho of episode return against its target over a sweep's ``points`` (the
    summary's ``sweep.targets``: ``target`` and per-episode ``returns``), and the one-sided
    p-value of rho > 0; NaN when either is constant. Episodes are pooled as independent
    although every target is played from the same seeds, which only makes it conservative."""
    from scipy import stats

    targets = [p["target"] for p in points for _ in p["returns"]]
    returns = [r for p in points for r in p["returns"]]
    if len(set(targets)) < 2 or len(set(returns)) < 2:
        return (math.nan, math.nan)  # a constant has no rank correlation
    result = stats.spearmanr(targets, returns, alternative="greater")
    return (float(result.statistic), float(result.pvalue))


def follows_sentence(follows: tuple[float, float], targets: int) -> str:
    """Whether a run's return rises with its target, as its rank test (``follows_target``)
    says, over a sweep of ``targets`` targets."""
    rho, p = follows
    if targets < 2:
        return "Only one target was played: there is no trend to test."
    if not np.isfinite(rho):
        return "Its return is the same at every target: it does not follow the target."
    if p < LEVEL:
        return f"Its return rises with the target (Spearman rho {rho:.2f}, one-sided p {p:.2g})."
    return (
        f"Its return shows no detectable rise with the target (Spearman rho {rho:.2f}, "
        f"one-sided p {p:.2g})."
    )


# ----------------------------------------------------------------------------- reading


def _load(path: Path) -> ComparedRun:
    directory = study_dir(_existing(path))
    summary_path = directory / SUMMARY
    if not summary_path.is_file():
        run = path.parent if path.name == "study" and not (path / "config.yaml").exists() else path
        raise UserError(
            f"{path}: no study found ({summary_path} is missing); run `atari-dt study {run}` "
            "first, or pass --study-missing to compare"
        )
    try:
        summary = json.loads(summary_path.read_text())
        _check(summary)
        return _compared(directory, summary)
    except (OSError, ValueError) as err:
        raise UserError(f"{summary_path}: not a readable study summary ({err})") from None
    except (KeyError, TypeError, AttributeError, IndexError) as err:
        raise UserError(
            f"{summary_path}: not a readable study summary ({type(err).__name__}: {err}); is "
            "it from `atari-dt study`?"
        ) from None


REQUIRED = ("headline", "landmarks", "sweep", "provenance", "verdict")


def _check(summary: Any) -> None:
    if not isinstance(summary, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in REQUIRED if k not in summary]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}; is it from `atari-dt study`?")
    if not isinstance(summary["sweep"], dict) or not summary["sweep"].get("targets"):
        raise ValueError("its sweep has no targets")


def _labels(runs: list[ComparedRun]) -> list[str]:
    """The game, with the run's directory name where two runs share a game."""
    games = [r.game for r in runs]
    labels = []
    for run in runs:
        name = (run.study_dir.parent if run.study_dir.name == "study" else run.study_dir).name
        labels.append(f"{run.game} ({name})" if games.count(run.game) > 1 else run.game)
    if len(set(labels)) < len(labels):  # same game and directory name: number them
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def _compared(directory: Path, summary: dict[str, Any]) -> ComparedRun:
    from atari_dt.study.scores import baseline

    prov, marks, headline = summary["provenance"], summary["landmarks"], summary["headline"]
    points = summary["sweep"]["targets"]
    base = baseline(prov["game"])
    normalised = [_normalise(p["raw_returns"], base) for p in points]
    capped = headline.get("episodes_at_step_cap", {}).get("value") or {}
    heads = headline.get("rtg_carriers", {}).get("value") or []
    return ComparedRun(
        label=prov["game"],
        study_dir=directory,
        game=prov["game"],
        seed=(prov.get("run_config") or {}).get("train", {}).get("seed"),
        held_out=prov.get("max_return_quantile"),
        reward_units=summary["sweep"]["reward_units"],
        data_min=float(marks["data_min"]),
        data_max=float(marks["data_max"]),
        train_max=float(marks["train_max"]),
        targets=np.array([p["target"] for p in points], dtype=np.float64),
        achieved=np.array([p["mean"] for p in points], dtype=np.float64),
        achieved_interval=np.array([interval_pair(p.get("ci95")) for p in points]).reshape(-1, 2),
        normalised=np.array([n[0] for n in normalised]),
        normalised_interval=np.array([n[1] for n in normalised]).reshape(-1, 2),
        capped=np.array([capped.get(f"{p['target']:g}", math.nan) for p in points]),
        follows=follows_target(points),
        gain=headline.get("extrapolation_gain_vs_data_max"),
        gain_vs_train=headline.get("extrapolation_gain_vs_train_max"),
        saturation=headline.get("saturation", {}).get("value"),
        carrier_hook=headline.get("rtg_carriers", {}).get("carrier_hook"),
        top_head=(heads[0]["head"], float(heads[0]["restored"])) if heads else None,
        steering_recovered=headline.get("steering", {}).get("value"),
        shares=summary.get("shares") or {},
        verdict=tuple(summary["verdict"]),
    )


def interval_pair(interval: Any) -> tuple[float, float]:
    """A summary's ``[low, high]`` (None, or null ends, after the JSON round trip) as floats,
    NaN where missing."""
    if not interval or interval[0] is None or interval[1] is None:
        return (math.nan, math.nan)
    return (float(interval[0]), float(interval[1]))


def _normalise(raw_returns: list[float], base: Any) -> tuple[float, tuple[float, float]]:
    """Mean human-normalised score of one target's episodes and its 95% t interval
    (``base``: the game's ``scores.Baseline``, or None)."""
    if base is None or not raw_returns:
        return math.nan, (math.nan, math.nan)
    scores = base.normalise(raw_returns)
    return float(scores.mean()), mean_interval(scores)


# ------------------------------------------------------------------------------ the table


def _finite(value: Any) -> Any:
    if isinstance(value, float | np.floating) and not math.isfinite(value):
        return None
    return float(value) if isinstance(value, np.floating) else value


def _gain_columns(run: ComparedRun, entry: dict[str, Any] | None, name: str) -> dict[str, Any]:
    entry = entry or {}
    value, interval = entry.get("value"), interval_pair(entry.get("interval"))
    return {
        name: value,
        f"{name}_low": interval[0],
        f"{name}_high": interval[1],
        f"{name}_in_data_units": (
            float(run.in_data_units(value, shift=False)) if value is not None else None
        ),
    }


def _row(run: ComparedRun) -> dict[str, Any]:
    finite = np.isfinite(run.normalised)
    best = int(np.nanargmax(run.normalised)) if finite.any() else None
    at = run.at_data_max
    row = {
        "run": run.label,
        "game": run.game,
        "seed": run.seed,
        "held_out_quantile": run.held_out,
        "reward_units": run.reward_units,
        "data_min": run.data_min,
        "data_max": run.data_max,
        "train_max": run.train_max,
        "normalised_at_data_max": run.normalised[at],
        "normalised_at_data_max_low": run.normalised_interval[at, 0],
        "normalised_at_data_max_high": run.normalised_interval[at, 1],
        "best_normalised": run.normalised[best] if best is not None else None,
        "best_normalised_target": float(run.targets[best]) if best is not None else None,
        "capped_at_top": run.capped[-1],
        "follows_target_rho": run.follows[0],
        "follows_target_p": run.follows[1],
        **_gain_columns(run, run.gain, "gain_vs_data_max"),
        **_gain_columns(run, run.gain_vs_train, "gain_vs_train_max"),
        "saturation_rtg": run.saturation,
        "saturation_in_data_units": (
            float(run.in_data_units(run.saturation)) if run.saturation is not None else None
        ),
        "carrier_hook": run.carrier_hook,
        "top_head": run.top_head[0] if run.top_head else None,
        "top_head_restored": run.top_head[1] if run.top_head else None,
        "steering_recovered": run.steering_recovered,
    }
    if run.shares.get("rtg"):
        ref = run.reference_index
        for kind, values in run.shares.get("tokens", {}).items():
            row[f"{kind}_token_share_ref"] = values[ref]
            row[f"{kind}_token_share_top"] = values[-1]
    return {k: _finite(v) for k, v in row.items()}


COLUMNS_HOW = {
    "data units": "(return - data_min) / (data_max - data_min) over the run's complete "
    "episodes: 0 is the data's worst return, 1 its best, whatever the game's scale or sign",
    "normalised_at_data_max": "mean human-normalised score at the target equal to the data's "
    "best return, with its 95% t interval over episodes: 100 * (raw score - random) / "
    "(human - random), atari_dt.study.scores; best_normalised: the highest mean over the "
    "sweep's targets (the largest of several noisy means: biased upwards)",
    "capped_at_top": "fraction of the top target's episodes that ran into the step cap: their "
    "scores are bounded by the cap (human scores are for whole games)",
    "follows_target_rho": "Spearman's rho of each episode's return against its target over the "
    "whole sweep; follows_target_p: its one-sided p-value of rho > 0 (episodes pooled; they "
    "share seeds across targets, which only makes the test conservative)",
    "gain_vs_data_max": "the study's paired extrapolation gain above the data's best return, "
    "in the run's units, with its 95% interval (_low, _high) and in data units; "
    "gain_vs_train_max: the same above the best training return when the top was held out",
    "saturation_in_data_units": "the RTG from which the policy stops changing, in data units",
    "carrier_hook": "the first residual hook where the last state token alone restores half of "
    "the RTG's effect (None: patching found none)",
    "rtg_token_share_ref": "the RTG tokens' share of |token IG| at the best training return "
    "(_top: at the top target)",
}
