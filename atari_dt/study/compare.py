"""Several runs' studies side by side (games, seeds, held-out fractions): read each run's
``study/summary.json`` into one :class:`ComparedRun` of named fields, with its sweep in
human-normalised units (:mod:`atari_dt.study.scores`), whether its return follows the target
(a rank test), its extrapolation gain, saturation, where its RTG is read in, and its token and
object shares. Pure: ``compare_runs`` reads, the table and the page only present."""

from __future__ import annotations

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
    Arrays are per sweep target ``[G]`` (intervals ``[G, 2]``)."""

    label: str
    study_dir: Path
    game: str
    seed: int | None
    """The training seed (the run config's ``train.seed``)."""
    held_out: float | None
    """``data.max_return_quantile``: episodes above this return quantile were held out."""
    reward_units: str
    data_max: float
    train_max: float
    targets: np.ndarray
    achieved: np.ndarray
    achieved_interval: np.ndarray
    normalised: np.ndarray
    normalised_interval: np.ndarray
    follows: tuple[float, float]
    """Spearman's rho of achieved return against target over every episode of the sweep, and
    the one-sided p-value of rho > 0 (``scipy.stats.spearmanr``)."""
    gain: dict[str, Any] | None
    saturation: float | None
    saturation_ratio: float | None
    carrier_hook: str | None
    top_head: tuple[str, float] | None
    steering_recovered: float | None
    shares: dict[str, Any]
    verdict: tuple[str, ...]

    @property
    def reference_index(self) -> int:
        """Index of the best training return in ``shares["rtg"]`` (the pixel study's RTGs)."""
        rtg = np.array(self.shares.get("rtg") or [0.0])
        return int(np.argmin(np.abs(rtg - self.shares.get("reference_rtg", 0.0))))

    @property
    def best_normalised(self) -> float:
        """The highest mean human-normalised score over the sweep's targets (NaN if none)."""
        finite = self.normalised[np.isfinite(self.normalised)]
        return float(finite.max()) if len(finite) else math.nan


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


def missing_studies(paths: list[str | Path]) -> list[Path]:
    """The given runs that have no study yet (no ``summary.json``)."""
    return [Path(p) for p in paths if not (study_dir(p) / SUMMARY).is_file()]


def compare_runs(paths: list[str | Path]) -> Comparison:
    """Read the studies of ``paths`` (run or study directories).

    Raises:
        UserError: fewer than one path, a path that is no run, a missing study (with the
            command that makes it), or a summary that cannot be read (names the file).
    """
    if not paths:
        raise UserError("compare needs at least one run directory")
    loaded = [_load(Path(p)) for p in paths]
    labels = _labels([s for _, s in loaded])
    return Comparison(
        tuple(_compared(d, s, label) for (d, s), label in zip(loaded, labels, strict=True))
    )


# ----------------------------------------------------------------------------- reading


def _load(path: Path) -> tuple[Path, dict[str, Any]]:
    if not path.exists():
        raise UserError(f"{path}: no such run directory")
    directory = study_dir(path)
    summary_path = directory / SUMMARY
    if not summary_path.is_file():
        raise UserError(
            f"{path}: no study found ({summary_path} is missing); run `atari-dt study {path}` "
            "first, or pass --study-missing to compare"
        )
    try:
        summary = json.loads(summary_path.read_text())
        _check(summary, summary_path)
    except (OSError, ValueError) as err:
        raise UserError(f"{summary_path}: not a readable study summary ({err})") from None
    return directory, summary


REQUIRED = ("headline", "landmarks", "sweep", "provenance", "verdict")


def _check(summary: Any, path: Path) -> None:
    if not isinstance(summary, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in REQUIRED if k not in summary]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}; is it from `atari-dt study`?")
    if not summary["sweep"].get("targets"):
        raise ValueError("its sweep has no targets")


def _labels(summaries: list[dict[str, Any]]) -> list[str]:
    """The game, with the run's directory name where two runs share a game."""
    games = [s["provenance"]["game"] for s in summaries]
    labels = []
    for game, s in zip(games, summaries, strict=True):
        name = Path(s["provenance"]["run"]).name
        labels.append(f"{game} ({name})" if games.count(game) > 1 else game)
    if len(set(labels)) < len(labels):  # same game and directory name: number them
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return labels


def _compared(directory: Path, summary: dict[str, Any], label: str) -> ComparedRun:
    from atari_dt.study.scores import baseline

    prov, marks, headline = summary["provenance"], summary["landmarks"], summary["headline"]
    points = summary["sweep"]["targets"]
    base = baseline(prov["game"])
    normalised = [_normalise(p["raw_returns"], base) for p in points]
    saturation = headline.get("saturation", {})
    carriers = headline.get("rtg_carriers", {})
    heads = carriers.get("value") or []
    steering = headline.get("steering", {})
    return ComparedRun(
        label=label,
        study_dir=directory,
        game=prov["game"],
        seed=prov.get("run_config", {}).get("train", {}).get("seed"),
        held_out=prov.get("max_return_quantile"),
        reward_units=summary["sweep"]["reward_units"],
        data_max=float(marks["data_max"]),
        train_max=float(marks["train_max"]),
        targets=np.array([p["target"] for p in points], dtype=np.float64),
        achieved=np.array([p["mean"] for p in points], dtype=np.float64),
        achieved_interval=np.array([_pair(p.get("ci95")) for p in points]),
        normalised=np.array([n[0] for n in normalised]),
        normalised_interval=np.array([n[1] for n in normalised]),
        follows=follows_target(points),
        gain=headline.get("extrapolation_gain_vs_data_max"),
        saturation=saturation.get("value"),
        saturation_ratio=saturation.get("relative_to_data_max"),
        carrier_hook=carriers.get("carrier_hook"),
        top_head=(heads[0]["head"], float(heads[0]["restored"])) if heads else None,
        steering_recovered=steering.get("value"),
        shares=summary.get("shares", {}),
        verdict=tuple(summary["verdict"]),
    )


def _pair(interval: Any) -> tuple[float, float]:
    if not interval or interval[0] is None or interval[1] is None:
        return (math.nan, math.nan)
    return (float(interval[0]), float(interval[1]))


def _normalise(raw_returns: list[float], base: Any) -> tuple[float, tuple[float, float]]:
    """Mean human-normalised score of one target's episodes and its 95% t interval."""
    if base is None or not raw_returns:
        return math.nan, (math.nan, math.nan)
    scores = 100.0 * (np.asarray(raw_returns, dtype=np.float64) - base.random)
    scores /= base.human - base.random
    return float(scores.mean()), mean_interval(scores)


def follows_target(points: list[dict[str, Any]]) -> tuple[float, float]:
    """Spearman's rho of episode return against its target over a sweep's ``points`` (the
    summary's ``sweep.targets``: ``target`` and per-episode ``returns``), and the one-sided
    p-value of rho > 0; NaN when either is constant."""
    from scipy import stats

    targets = [p["target"] for p in points for _ in p["returns"]]
    returns = [r for p in points for r in p["returns"]]
    if len(set(targets)) < 2 or len(set(returns)) < 2:
        return (math.nan, math.nan)  # a constant has no rank correlation
    result = stats.spearmanr(targets, returns, alternative="greater")
    return (float(result.statistic), float(result.pvalue))


def follows_sentence(follows: tuple[float, float]) -> str:
    """Whether a run's return rises with its target, as its rank test (``follows_target``)
    says."""
    rho, p = follows
    if not np.isfinite(rho):
        return "Its return does not vary over the sweep: it cannot follow the target."
    if p < LEVEL:
        return f"Its return rises with the target (Spearman rho {rho:.2f}, one-sided p {p:.2g})."
    return (
        f"Its return shows no detectable rise with the target (Spearman rho {rho:.2f}, "
        f"one-sided p {p:.2g})."
    )


# ------------------------------------------------------------------------------ the table


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _share(shares: dict[str, Any], kind: str, name: str, at: int) -> float | None:
    values = shares.get(kind, {}).get(name)
    return values[at] if values else None


def _row(run: ComparedRun) -> dict[str, Any]:
    gain = run.gain or {}
    gain_interval = gain.get("interval") or [None, None]
    top = int(np.nanargmax(run.normalised)) if np.isfinite(run.normalised).any() else None
    shares = run.shares
    ref = run.reference_index if shares.get("rtg") else None
    row = {
        "run": run.label,
        "game": run.game,
        "seed": run.seed,
        "held_out_quantile": run.held_out,
        "reward_units": run.reward_units,
        "data_max": run.data_max,
        "train_max": run.train_max,
        "best_normalised": run.best_normalised,
        "best_normalised_target": float(run.targets[top]) if top is not None else None,
        "follows_target_rho": run.follows[0],
        "follows_target_p": run.follows[1],
        "gain_vs_data_max": gain.get("value"),
        "gain_low": gain_interval[0],
        "gain_high": gain_interval[1],
        "gain_over_data_max": (
            gain["value"] / run.data_max if gain.get("value") is not None and run.data_max else None
        ),
        "saturation_rtg": run.saturation,
        "saturation_over_data_max": run.saturation_ratio,
        "carrier_hook": run.carrier_hook,
        "top_head": run.top_head[0] if run.top_head else None,
        "top_head_restored": run.top_head[1] if run.top_head else None,
        "steering_recovered": run.steering_recovered,
    }
    if ref is not None:
        for kind in shares.get("tokens", {}):
            row[f"{kind}_token_share_ref"] = _share(shares, "tokens", kind, ref)
            row[f"{kind}_token_share_top"] = _share(shares, "tokens", kind, -1)
    return {k: _finite(v) for k, v in row.items()}


COLUMNS_HOW = {
    "best_normalised": "highest mean human-normalised score over the sweep's targets: "
    "100 * (raw score - random) / (human - random), atari_dt.study.scores",
    "follows_target_rho": "Spearman's rho of each episode's return against its target over the "
    "whole sweep; follows_target_p: one-sided p-value of rho > 0",
    "gain_vs_data_max": "the study's paired extrapolation gain above the data's best return, "
    "in the run's units, with its 95% interval (gain_low, gain_high); gain_over_data_max: "
    "the gain as a fraction of the data's best return, comparable across games",
    "saturation_over_data_max": "the RTG from which the policy stops changing, as a multiple "
    "of the data's best return",
    "carrier_hook": "the first residual hook where the last state token alone restores half of "
    "the RTG's effect (None: patching found none)",
    "rtg_token_share_ref": "the RTG tokens' share of |token IG| at the best training return "
    "(_top: at the top target)",
}
