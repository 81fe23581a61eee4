"""The study's headline numbers, each with how it was computed and its interval where it comes
from sampling (``summary.json``), and the verdict in words that the report opens with. Every
sentence of the verdict follows from a number here and its interval, never from a threshold
on a point estimate alone."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from atari_dt.intervals import bootstrap_interval, jsonable, mean_interval
from atari_dt.study.mechanism import CARRIED
from atari_dt.study.study import Study

NEGLIGIBLE_JS = 0.005  # nats: a policy change below this is not called a change
CAPPED = 0.5  # more than half the episodes ending at the step cap: the cap may bound the return


def _entry(
    value: Any, how: str, *, interval: Any = None, units: str | None = None, **more: Any
) -> dict:
    entry = {"value": value, "interval": jsonable(interval) if interval is not None else None}
    entry["how"] = how
    if units:
        entry["units"] = units
    return {**entry, **more}


def gain_entry(study: Study, key: str) -> dict | None:
    """The extrapolation gain against the data's (``data_max``) or the training data's
    (``train_max``) best return, with the return achieved above it against that return."""
    gain = study.gains.get(key)
    if gain is None:
        return None
    targets = ", ".join(f"{t:g}" for t in gain.above)
    return _entry(
        gain.gain,
        f"per episode seed (every target is played from the same {gain.episodes} seeds): the "
        f"return averaged over the targets above {gain.reference_name} ({gain.reference:g}: "
        f"{targets}) minus the return at {gain.reference:g}; mean over seeds, 95% t interval "
        "of the paired differences (scipy.stats.t)",
        interval=gain.interval,
        units=study.sweep.reward_units,
        reference=gain.reference,
        achieved_above=float(gain.achieved.mean()),
        achieved_above_interval=jsonable(gain.achieved_interval),
        achieved_how="each seed's return averaged over those targets; mean over seeds with its "
        "95% t interval: it extrapolates only if this lies above the reference return itself",
    )


def divergence_entry(study: Study) -> dict:
    """The policy's divergence on the same states, top target against best training return."""
    d = study.divergence
    return _entry(
        float(d.mean[-1]),
        f"Jensen-Shannon divergence (nats) between the policy at RTG {d.rtg[-1]:g} and at the "
        f"best training return {d.reference_rtg:g} on the same {study.scan.contexts} "
        "contexts' last steps, mean over contexts; 95% percentile bootstrap over contexts",
        interval=tuple(d.interval[-1]),
        units="nats",
        beyond_data=bool(d.rtg[-1] > study.marks.data_max),
    )


def saturation_entry(study: Study) -> dict:
    """Where the policy stops changing along the scan, against the data's best return."""
    sat = study.scan.saturation
    return _entry(
        sat.saturation_rtg,
        "the smallest scan RTG from which the policy's total variation over the rest of the "
        f"scan grid stays below 0.02 (analysis.saturation), on {study.scan.contexts} contexts; "
        "no interval (a property of these contexts)",
        units=study.sweep.reward_units,
        relative_to_data_max=(
            sat.saturation_rtg / study.marks.data_max
            if sat.saturation_rtg is not None and study.marks.data_max > 0
            else None
        ),
        saturated_rtg_units_at_top=float(sat.saturated_fraction[-1]),
    )


def carriers_entry(study: Study) -> dict:
    """The heads patching finds carrying the RTG, and the carrier hook."""
    p = study.patching
    heads = [{"head": h, "restored": r, "interval": jsonable(i)} for h, r, i in p.top_heads(3)]
    heads = heads if p.contexts else []  # nothing moved: no head to name
    return _entry(
        heads,
        f"denoising activation patching of each head's output (hook_z) from the RTG "
        f"{p.high_rtg:g} run into the RTG {p.low_rtg:g} run, per context, metric: the logit "
        "difference the RTG change moves most; fraction of the change restored, mean over "
        f"{p.contexts} contexts ({p.skipped} skipped: the RTG did not move them); 95% "
        "percentile bootstrap over contexts",
        carrier_hook=study.carrier_hook,
        contexts=p.contexts,
        low_rtg=p.low_rtg,
        high_rtg=p.high_rtg,
        carrier_how=(
            "the first residual hook where patching the last state token alone restores at "
            "least half the change"
        ),
    )


def steering_entry(study: Study) -> dict:
    """What steering by the RTG direction at the carrier hook recovers."""
    s = study.steering
    hook = study.carrier_hook or s.hooks[-1]  # no carrier: the final residual, which has it all
    row = s.hooks.index(hook)
    value = float(s.recovered[row])
    where = (
        "where patching finds the RTG"
        if study.carrier_hook
        else "the final residual: patching found no carrier"
    )
    return _entry(
        value if math.isfinite(value) else None,
        f"1 - mean TV(steered, high) / mean TV(low, high) over {s.contexts} held-out contexts: "
        f"the RTG {study.direction.low_rtg:g} run with {s.scale:g} x the RTG direction (mean "
        f"residual difference to the RTG {study.direction.high_rtg:g} run over "
        f"{study.direction.contexts} other contexts, per token kind) added at "
        f"{hook} ({where}); "
        "1 = steering does what raising the RTG does; 95% percentile bootstrap over contexts",
        interval=tuple(s.interval[row]),
        hook=hook,
        rtg_effect=s.rtg_effect,
        by_hook={h: float(v) for h, v in zip(s.hooks, s.recovered, strict=True)},
    )


def _paired_change(before: np.ndarray, after: np.ndarray, seed: int) -> tuple[float, tuple]:
    keep = ~(np.isnan(before) | np.isnan(after))
    b, a = before[keep], after[keep]
    if not len(b):
        return math.nan, (math.nan, math.nan)

    def change(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return y.mean(axis=axis) - x.mean(axis=axis)

    return float(a.mean() - b.mean()), bootstrap_interval(change, b, a, seed=seed)


def pixel_entries(study: Study) -> dict[str, Any]:
    px, seed = study.pixels, study.config.seed
    ref = int(np.flatnonzero(np.isclose(px.rtg, px.reference_rtg))[0])
    top_rho = px.rank_correlation[:, -1]
    top_rho = top_rho[np.isfinite(top_rho)]  # a constant map has no rank correlation
    out = {
        "map_rank_correlation_at_top": _entry(
            float(np.mean(top_rho)) if len(top_rho) else None,
            f"Spearman correlation of |IG| maps (black baseline, {study.config.n_steps} steps) "
            f"of the same {len(top_rho)} decisions at RTG {px.rtg[-1]:g} and at the best "
            f"training return {px.reference_rtg:g}; mean over decisions; 95% bootstrap",
            interval=bootstrap_interval(np.mean, top_rho, seed=seed),
        ),
        "map_top_overlap_at_top": _entry(
            float(np.mean(px.top_overlap[:, -1])),
            "fraction of the 2% largest-|IG| pixels shared by the two maps (chance: 0.02)",
            interval=bootstrap_interval(np.mean, px.top_overlap[:, -1], seed=seed),
        ),
    }
    out["attribution_completeness"] = _entry(
        px.worst_completeness(),
        "the largest |convergence delta| / max(|f(input) - f(baseline)|, 1e-3) over every "
        "pixel attribution of the study (logit and hook targets); above 0.05 the maps are not "
        "converged (raise --n-steps)",
    )
    rtg_share = px.token_shares[:, :, 0]
    value, interval = _paired_change(rtg_share[:, ref], rtg_share[:, -1], seed)
    out["rtg_token_share_change"] = _entry(
        value,
        "change of the RTG tokens' share of |token IG| from the reference to the top RTG, "
        "mean over decisions; 95% paired bootstrap",
        interval=interval,
        at_reference=float(np.mean(rtg_share[:, ref])),
        at_top=float(np.mean(rtg_share[:, -1])),
    )
    changes = {
        name: _paired_change(share[:, ref], share[:, -1], seed)
        for name, share in px.object_shares().items()
        if name != "background"
    }
    changes = {k: v for k, v in changes.items() if not math.isnan(v[0])}
    if changes:
        name = max(changes, key=lambda k: abs(changes[k][0]))
        out["object_share_change"] = _entry(
            changes[name][0],
            "the game object whose share of |IG| (newest frame, RAM boxes) changes most "
            "from the reference to the top RTG; mean over decisions where it is on screen; "
            "95% paired bootstrap",
            interval=changes[name][1],
            object=name,
            all={k: v[0] for k, v in changes.items()},
        )
    return out


def shares_entry(study: Study) -> dict[str, Any]:
    """Where the attribution goes at every pixel-study RTG: each token type's and each game
    object's mean share of |IG| (what ``compare`` sets side by side across runs)."""
    from atari_dt.study.pixels import TOKEN_TYPES

    px = study.pixels

    def by_rtg(share: np.ndarray) -> list[float | None]:  # [K, G] -> mean per RTG, NaN-aware
        counts = np.isfinite(share).sum(0)
        sums = np.nansum(share, axis=0)
        return [float(s / c) if c else None for s, c in zip(sums, counts, strict=True)]

    return {
        "rtg": [float(r) for r in px.rtg],
        "reference_rtg": float(px.reference_rtg),
        "tokens": {kind: by_rtg(px.token_shares[:, :, i]) for i, kind in enumerate(TOKEN_TYPES)},
        "objects": {name: by_rtg(share) for name, share in px.object_shares().items()},
        "how": f"share of |IG| (black baseline, {study.config.n_steps} steps) of "
        f"{len(px.actions)} decisions at each constant RTG: tokens over all tokens of the "
        "context, objects over the newest frame's pixels (RAM boxes; mean over the decisions "
        "where the object is on screen)",
    }


def imitation_entry(study: Study) -> dict | None:
    """The DT's agreement with the expert above the data, pooled over episodes."""
    im = study.imitation
    if im is None:
        return None
    above = [i for i, t in enumerate(im.targets) if t > study.marks.data_max]
    at = im.targets.index(study.marks.train_max) if study.marks.train_max in im.targets else None
    if not above:
        return None
    from atari_dt.study.behaviour import per_episode
    from atari_dt.study.imitation import nearest_behaviour, pooled

    rows = [list(im.rollouts[i].values) for i in above]  # one seed = one unit, as for the gain
    agreement = pooled(per_episode(rows).tolist() if all(rows) else [])
    low, high = agreement.interval
    within = [  # every data behaviour whose agreement the DT's interval holds
        label for label, a in im.data.items() if math.isfinite(low) and low <= a.mean <= high
    ]
    entry = _entry(
        agreement.mean if math.isfinite(agreement.mean) else None,
        f"fraction of steps where the DT's action equals the scripted {im.expert}'s on the same "
        f"emulator state (RAM; the expert shadows each episode), each of {agreement.episodes} "
        "seeds averaged over the targets above the data's best return; 95% t interval over "
        "seeds; the "
        "behaviour named is the data's whose own agreement is nearest",
        interval=agreement.interval,
        imitates=nearest_behaviour(im.data, agreement.mean),
        consistent_with=within,
        data={label: a.mean for label, a in im.data.items()},
    )
    if at is not None:
        entry["at_best_training_return"] = im.rollouts[at].mean
        entry["at_best_training_return_imitates"] = im.imitated[at]
    return entry


def summarise_study(study: Study, *, command: str) -> dict[str, Any]:
    """The JSON-ready summary of ``study`` (headline numbers, provenance, cache use)."""
    units = study.sweep.reward_units
    truncated = [s.truncated / max(len(s.returns), 1) for s in study.sweep.targets]
    headline = {
        "extrapolation_gain_vs_data_max": gain_entry(study, "data_max"),
        "extrapolation_gain_vs_train_max": gain_entry(study, "train_max"),
        "saturation": saturation_entry(study),
        "policy_divergence_at_top": divergence_entry(study),
        "rtg_carriers": carriers_entry(study),
        "steering": steering_entry(study),
        "imitation_above_data": imitation_entry(study),
        **pixel_entries(study),
        "episodes_at_step_cap": _entry(
            {f"{s.target:g}": f for s, f in zip(study.sweep.targets, truncated, strict=True)},
            "fraction of each target's episodes that ran into the "
            f"{study.provenance['max_episode_steps']}-step cap (such returns are bounded by "
            "the cap, not the model)",
        ),
    }
    if study.steered is not None:
        s = study.steered
        headline["steered_rollouts"] = _entry(
            float(np.mean(s.steered) - np.mean(s.plain)),
            f"mean achieved return at target {s.target:g} with {s.scale:g} x the RTG direction "
            f"added at {s.hook}, minus without, per seed (the same seeds); 95% t interval of "
            "the paired differences",
            interval=mean_interval(np.subtract(s.steered, s.plain)),
            units=units,
        )
    return {
        "verdict": verdict(study, headline),
        "headline": {k: v for k, v in headline.items() if v is not None},
        "landmarks": {**vars(study.marks), "held_out": study.marks.held_out},
        "targets": [float(t) for t in study.grid],
        "sweep": study.sweep.to_json(),
        "shares": shares_entry(study),
        "command": command,
        "seed": study.config.seed,
        "provenance": study.provenance,
        "cache": {"computed": study.computed, "reused": study.reused},
    }


def _interval_text(entry: dict) -> str:
    interval = entry.get("interval")
    return f"[{interval[0]:.3g}, {interval[1]:.3g}]" if interval else "(no interval)"


def _sign(interval: list[float] | None) -> int:
    """+1 / -1 when the interval excludes 0 on that side, 0 when it holds 0 (or is missing)."""
    if not interval:
        return 0
    return 1 if interval[0] > 0 else -1 if interval[1] < 0 else 0


def extrapolation_sentence(entry: dict | None, units: str) -> str:
    """What the gain says, by what its intervals allow: "extrapolates" needs the gain above 0
    *and* the return achieved above the reference above the reference return itself."""
    if entry is None:
        return (
            "No target above the data's best return was played: nothing to say about extrapolation."
        )
    ref, value = entry["reference"], entry["value"]
    text = f"{value:+.3g} {units} {_interval_text(entry)}"
    side = _sign(entry["interval"])
    achieved = entry.get("achieved_above")
    reached = entry.get("achieved_above_interval")
    got = (
        ""
        if achieved is None
        else f"; achieved {achieved:.4g} {_interval_text({'interval': reached})}"
    )
    if side > 0 and reached and reached[0] > ref:
        return (
            f"Asked for more than {ref:g}, the policy achieves more ({text}) and beyond {ref:g} "
            f"itself{got} — it extrapolates."
        )
    if side > 0:
        return (
            f"Asked for more than {ref:g}, the policy achieves more ({text}), but not "
            f"demonstrably beyond {ref:g}{got} — no extrapolation past the data."
        )
    if side < 0:
        return f"Asked for more than {ref:g}, the policy achieves less: {text}{got}."
    if reached and reached[0] > ref:
        return (
            f"Asked for more than {ref:g}, the policy achieves no detectably different return "
            f"({text} holds 0): asking for more changes nothing, although the return it "
            f"achieves there already exceeds {ref:g}{got}."
        )
    return (
        f"Asked for more than {ref:g}, the policy achieves no detectably different return: "
        f"{text} holds 0{got} — no evidence of extrapolation."
    )


def divergence_sentence(entry: dict) -> str:
    """Whether the action distribution on the same states changes beyond the data: a change
    when the interval lies above ``NEGLIGIBLE_JS``, none when it lies below, else undecided."""
    if not entry.get("beyond_data", True):
        return (
            "No scan RTG lies beyond the data's best return: nothing to say about divergence there."
        )
    text = f"JS {entry['value']:.3g} nats {_interval_text(entry)}"
    interval = entry["interval"]
    if interval and interval[0] > NEGLIGIBLE_JS:
        return (
            f"On the same states the action distribution changes beyond the data: {text} "
            "between the best training return and the top target."
        )
    if interval and interval[1] < NEGLIGIBLE_JS:
        return (
            f"On the same states the action distribution does not change beyond the data: "
            f"{text}, below {NEGLIGIBLE_JS} nats."
        )
    return (
        f"Whether the action distribution on the same states changes beyond the data cannot be "
        f"told from these contexts: {text} straddles {NEGLIGIBLE_JS} nats."
    )


def verdict(study: Study, headline: dict[str, Any]) -> list[str]:
    """The study's findings in sentences, each read off a headline entry and its interval."""
    units = study.sweep.reward_units
    lines = [extrapolation_sentence(headline["extrapolation_gain_vs_data_max"], units)]
    if headline.get("extrapolation_gain_vs_train_max"):
        sentence = extrapolation_sentence(headline["extrapolation_gain_vs_train_max"], units)
        lowered = sentence[0].lower() + sentence[1:]
        lines.append(f"Against the best training return (the top was held out): {lowered}")
    capped = [t for t, f in headline["episodes_at_step_cap"]["value"].items() if f > CAPPED]
    if capped:
        lines.append(
            f"Caution: most episodes at targets {', '.join(capped)} ran into the "
            f"{study.provenance['max_episode_steps']}-step cap, which may bound their return."
        )
    lines.append(divergence_sentence(headline["policy_divergence_at_top"]))
    lines.append(_saturation_sentence(headline["saturation"], units))
    im = headline.get("imitation_above_data")
    if im and im["value"] is not None:
        also = [b for b in im["consistent_with"] if b != im["imitates"]]
        low, high = im["interval"] or (float("nan"), float("nan"))
        where = (
            f" (the interval also holds {', '.join(repr(b) for b in also)})"
            if also
            else ""
            if im["consistent_with"]
            else " (though its interval holds no data behaviour's agreement)"
        )
        lines.append(
            f"Above the data its actions agree with the expert on {im['value']:.0%} "
            f"[{low:.0%}, {high:.0%}] of steps, nearest the data's '{im['imitates']}' "
            f"episodes{where}."
        )
    lines += mechanism_sentences(headline)
    completeness = headline.get("attribution_completeness")
    if completeness and completeness["value"] > 0.05:
        lines.append(
            f"Caution: some pixel attributions did not converge (|delta| up to "
            f"{completeness['value']:.0%} of the change); raise --n-steps."
        )
    return lines


def _saturation_sentence(entry: dict, units: str) -> str:
    if entry["value"] is None:
        return "The policy keeps changing up to the top of the scan: it does not saturate there."
    ratio = entry.get("relative_to_data_max")
    where = f" ({ratio:.2g}x the data's best return)" if ratio else ""
    return (
        f"On these contexts the policy stops changing (total variation left < 0.02) from RTG "
        f"{entry['value']:.4g} {units}{where}."
    )


def mechanism_sentences(headline: dict[str, Any]) -> list[str]:
    """What patching and steering found, read off the ``rtg_carriers`` and ``steering``
    entries and their intervals."""
    carriers = headline["rtg_carriers"]
    if carriers["contexts"] == 0:
        return [
            f"Raising the RTG from {carriers['low_rtg']:g} to {carriers['high_rtg']:g} moves no "
            "patched context's policy (total variation below 0.001): no effect, so no mechanism "
            "to trace."
        ]
    top, hook = carriers["value"][0], carriers["carrier_hook"]
    reached = (
        f"the RTG has reached the decision token at {hook}"
        if hook
        else "patching the decision token alone restores under half of it at every layer"
    )
    interval = top["interval"]
    if interval and interval[0] > 0:
        share = "most" if interval[0] > CARRIED else "part"
        lines = [
            f"Patching names {top['head']}, which carries {share} of the RTG's effect on the "
            f"decision: its output alone restores {top['restored']:.2f} "
            f"[{interval[0]:.2f}, {interval[1]:.2f}]; {reached}."
        ]
    else:
        why = "an interval that holds 0" if interval else "no interval (too few contexts)"
        lines = [
            f"No single head is shown to carry the RTG: the best, {top['head']}, restores "
            f"{top['restored']:.2f} with {why}; {reached}."
        ]
    steer = headline["steering"]
    if steer["value"] is None:
        return [
            *lines,
            "Steering had nothing to recover: the RTG moves none of the held-out policies.",
        ]
    side = _sign(steer["interval"])
    verb = (
        "moves the policy the way raising the RTG does"
        if side > 0
        else "moves the policy away from what raising the RTG does"
        if side < 0
        else "does not detectably move the policy toward what raising the RTG does"
    )
    fallback = "" if hook else " (the final residual: it holds the whole RTG effect by design)"
    lines.append(
        f"Adding the RTG direction at {steer['hook']}{fallback} {verb}: recovered "
        f"{steer['value']:.2f} {_interval_text(steer)} on held-out contexts."
    )
    return lines
