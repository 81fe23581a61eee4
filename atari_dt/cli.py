"""The ``atari-dt`` command. Sub-commands import their heavy dependencies (torch, h5py, ALE)
only when they run, so ``atari-dt --help`` starts in well under a second."""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Sequence

from atari_dt import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atari-dt",
        description="Decision Transformers on Atari from pixels: data, training, interpretability.",
    )
    parser.add_argument("--version", action="version", version=f"atari-dt {__version__}")
    stages = parser.add_subparsers(dest="stage", required=True, metavar="COMMAND")
    data = stages.add_parser("data", help="DQN-replay logs and episode stores")
    commands = data.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    _add_convert(commands)
    _add_convert_minari(commands)
    _add_info(commands)
    _add_verify(commands)
    _add_show(commands)
    _add_collect(stages)
    _add_train(stages)
    _add_eval(stages)
    _add_attribute(stages)
    _add_scan(stages)
    _add_analyze(stages)
    _add_study(stages)
    _add_compare(stages)
    _add_app(stages)
    model = stages.add_parser("model", help="model checkpoints: import, inspect")
    model_commands = model.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    _add_import_original(model_commands)
    _add_model_info(model_commands)
    return parser


def _add_train(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "train",
        help="train a Decision Transformer on an episode store (one process or torchrun DDP)",
        description="Trains with the config's model/train sections on its data. Multi-process: "
        "torchrun --nproc_per_node N -m atari_dt.training CONFIG [...] (same arguments).",
    )
    p.add_argument("config", help="YAML config (see configs/train/)")
    _add_set_arg(p, "model.n_layers=2")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument(
        "--data", help="episode store (.h5) or replay_logs directory (default: data.path)"
    )
    p.add_argument("--max-steps", type=int, help="optimiser steps (default: train.max_steps)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run's newest checkpoint"
    )
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_eval(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "eval",
        help="play a trained run at several target returns (sweep table, plot, videos)",
        description="Defaults come from the run's eval section; flags override them. Writes "
        "sweep.json, sweep.csv, sweep.png (and GIFs with --video) to --out (RUN_DIR/eval).",
    )
    p.add_argument("run_dir", help="training run directory")
    p.add_argument("--targets", help="comma-separated target returns, e.g. 0,500,1000,2000")
    p.add_argument("--episodes", type=int, help="episodes per target")
    p.add_argument("--envs", type=int, help="environments stepped together")
    p.add_argument("--argmax", action="store_true", help="take the argmax instead of sampling")
    p.add_argument("--temperature", type=float, help="softmax temperature when sampling")
    p.add_argument(
        "--reward-units",
        choices=["auto", "clipped", "raw"],
        help="rewards the target is decremented by (auto: the training data's)",
    )
    p.add_argument("--max-episode-steps", type=int, help="cap on agent steps per episode")
    p.add_argument("--seed", type=int, help="seeds resets and sampling")
    _add_speed_args(p)
    p.add_argument("--game", help="ALE game, when the run does not record it")
    p.add_argument(
        "--video",
        type=int,
        default=0,
        metavar="K",
        help="save GIFs of the first K episodes of every target",
    )
    p.add_argument("--out", help="output directory (default: RUN_DIR/eval)")
    p.add_argument("--json", action="store_true", help="print the sweep as JSON")
    _add_set_arg(p, "eval.preset=dt_original_eval")


def _add_attribute(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "attribute",
        help="explain one decision of a trained run: pixels, tokens, objects (PNG + JSON)",
        description="Writes overlay.png (each stacked frame with its signed attribution), "
        "window.png (with --steps all), objects.png (games with RAM labels) and "
        "attribution.json to --out.",
    )
    _add_decision_args(p)
    p.add_argument(
        "--method",
        default="ig",
        choices=[
            "ig",
            "smoothgrad",
            "gradient_shap",
            "occlusion",
            "ablation_frames",
            "ablation_superpixels",
        ],
    )
    p.add_argument("--baseline", default="black", choices=["black", "blur", "mean", "noise"])
    p.add_argument("--action", type=int, help="action explained (default: the model's choice)")
    p.add_argument("--kind", default="logit", choices=["logit", "log_prob", "logit_diff"])
    p.add_argument("--other-action", type=int, help="the second action of --kind logit_diff")
    p.add_argument(
        "--steps",
        default="current",
        choices=["current", "all"],
        help="attribute the current frame stack or every stack of the window",
    )
    p.add_argument("--n-steps", type=int, default=50, help="integration steps of IG")
    p.add_argument(
        "--gif",
        type=int,
        default=0,
        metavar="N",
        help="also write episode.gif: IG (with --baseline) of the model's choice at N "
        "steps from --step",
    )
    p.add_argument("--out", required=True, help="output directory")


def _add_scan(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "scan",
        help="RTG scan of a trained run: the policy on real contexts as the asked return sweeps",
        description="Writes scan.json, scan.png and attention_to_rtg.png to --out (RUN/scan).",
    )
    p.add_argument("run_dir", help="training run directory")
    p.add_argument("--rtg", required=True, help="grid: start:stop:count (0:3000:31) or 0,10,20")
    p.add_argument("--contexts", type=int, default=256, help="context windows from the data")
    p.add_argument(
        "--mode",
        choices=["constant", "decremented"],
        default="constant",
        help="RTG constant over the window, or decremented by its rewards",
    )
    p.add_argument(
        "--reference",
        type=float,
        help="RTG divergences are measured from (default: the data's median return)",
    )
    p.add_argument("--seed", type=int, default=0, help="which contexts are sampled")
    p.add_argument("--data", help="episode store (default: the run's data.path)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/scan)")


def _add_study(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "study",
        help="the RTG-extrapolation study of a trained run: behaviour, mechanism, pixels; "
        "summary.json and a self-contained report.html",
        description="Plays, scans, patches, steers and attributes the run at target returns from "
        "below its data to 4x the data's best, and writes summary.json and report.html to --out "
        "(RUN/study). Finished parts are cached in OUT/cache and reused by a re-run.",
    )
    p.add_argument("run_dir", help="training run directory")
    _add_study_settings(p)
    p.add_argument("--data", help="episode store (default: where the run recorded it)")
    p.add_argument("--out", help="output directory (default: RUN_DIR/study)")


def _add_speed_args(p: argparse.ArgumentParser) -> None:
    """``--threads`` and ``--precision`` of the rollouts."""
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads while playing (0: torch's default; default: the run's eval setting, 1)",
    )
    p.add_argument(
        "--precision",
        choices=["float32", "bfloat16"],
        help="the model's precision while playing (default: the run's eval setting, float32; "
        "bfloat16 is faster only on CPUs with bf16 units)",
    )


def _add_study_settings(p: argparse.ArgumentParser) -> None:
    """The study's settings (shared by ``study`` and ``compare --study-missing``)."""
    p.add_argument(
        "--targets",
        help="comma-separated target returns (default: below the data's minimum to 4x its max; "
        "the training median and best and the data's best are always added)",
    )
    p.add_argument("--contexts", type=int, default=64, help="context windows for scan and steering")
    p.add_argument("--episodes", type=int, default=6, help="rollouts per target (>= 2)")
    p.add_argument("--patch-contexts", type=int, default=8, help="contexts patched one by one")
    p.add_argument("--pixel-contexts", type=int, default=4, help="decisions attributed to pixels")
    p.add_argument("--n-steps", type=int, default=64, help="integration points of each IG")
    p.add_argument(
        "--max-episode-steps", type=int, help="cap per rollout (default: the run's eval cap)"
    )
    p.add_argument(
        "--steer", action="store_true", help="also play rollouts steered by the RTG direction"
    )
    p.add_argument("--seed", type=int, default=0, help="contexts, rollouts and bootstraps")
    _add_speed_args(p)
    p.add_argument("--force", action="store_true", help="recompute every part (ignore the cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_compare(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "compare",
        help="several runs' studies side by side (games, seeds, held-out fractions): table, "
        "human-normalised curves and one HTML page",
        description="Reads RUN/study/summary.json of every run and writes table.csv, "
        "table.json, the figures and compare.html to --out. Runs without a study are refused "
        "(with the command to run), or studied first with --study-missing (using the study "
        "settings below).",
    )
    p.add_argument("runs", nargs="+", help="training run (or study) directories")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--study-missing",
        action="store_true",
        help="run `atari-dt study` on runs that have no study yet (default: refuse them)",
    )
    _add_study_settings(p)


def _add_app(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "app",
        help="explore trained runs in the browser: episodes, RTG scan, attribution, heads "
        "(needs atari-dt[app])",
        description="Serves a Streamlit app on --host:--port that reads only the runs given "
        "here. Pages: Run, Episode, RTG scan, Attribution, Heads.",
    )
    p.add_argument("runs", nargs="+", help="training run directories")
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only)",
    )


def _add_analyze(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "analyze",
        help="DLA, logit lens, RTG patching, attention, probes, mean ablation of a trained run",
        description="Writes analysis.json and plots (dla, logit_lens, patching_*, attention, "
        "probes, ablation_heads) to --out.",
    )
    _add_decision_args(p)
    p.add_argument("--contexts", type=int, default=256, help="contexts for attention and probes")
    p.add_argument(
        "--corrupt",
        choices=["rtg", "frame"],
        default="rtg",
        help="what the corrupted run of patching changes: the RTG or the current frames",
    )
    p.add_argument(
        "--corrupt-rtg",
        type=float,
        help="RTG of the corrupted run in patching (default: 3x the data's max)",
    )
    p.add_argument(
        "--other-action",
        type=int,
        help="second action of the patched logit difference (default: the least likely)",
    )
    p.add_argument("--seed", type=int, default=0, help="which contexts are sampled")
    p.add_argument("--out", required=True, help="output directory")


def _add_import_original(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "import-original",
        help="convert a kzl/decision-transformer Atari state dict into a hooked model",
        description="Reads a torch.save'd state dict of the original Atari DT (weights_only: "
        "nothing in it runs), infers its sizes and writes a checkpoint directory "
        "(model.safetensors + config.json) with positional: original.",
    )
    p.add_argument("checkpoint", help="the original model's state dict (.pt/.pth)")
    p.add_argument("out_dir", help="checkpoint directory to write")
    p.add_argument(
        "--n-heads",
        type=int,
        default=8,
        help="attention heads (not stored in the state dict; default 8 as in the paper)",
    )
    p.add_argument(
        "--behaviour-cloning",
        action="store_true",
        help="the checkpoint is the original's 'naive' (BC) model: tokens (s, a), no RTG",
    )
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint")


def _add_model_info(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("info", help="summarise a checkpoint directory")
    p.add_argument("path", help="checkpoint directory (model.safetensors + config.json)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _add_collect(stages: argparse._SubParsersAction) -> None:
    p = stages.add_parser(
        "collect",
        help="play ALE with behaviour policies and record DQN-replay-format data",
        description="Defaults come from the config's collect section (see configs/collect/); "
        "flags override them.",
    )
    _add_config_args(p, "collect", "collect.policy=[{policy: random}]")
    p.add_argument("--game", help="ALE game, e.g. Seaquest")
    p.add_argument(
        "--policy",
        choices=["random", "expert", "mixture"],
        help="random, the game's scripted expert, or the config's mixture (default)",
    )
    p.add_argument("--steps", type=int, help="agent steps to collect")
    p.add_argument("--out", required=True, help=".h5 store, or a directory for dqn-replay")
    p.add_argument("--format", choices=["h5", "dqn-replay"])
    p.add_argument("--workers", type=int, help="worker processes (0: all cores)")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-episode-steps", type=int, help="cap on agent steps per episode")
    p.add_argument(
        "--capacity",
        type=int,
        help="buffer size C of dqn-replay logs (published: 1,000,000; small values make "
        "episodes cross files)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted (or shorter) collection at --out",
    )
    p.add_argument("--force", action="store_true", help="replace existing output")


def _add_convert(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("convert", help="convert a replay_logs directory into an episode store")
    p.add_argument("source", help="replay_logs directory (<Game>/<run>/replay_logs)")
    p.add_argument("destination", help="episode store to write (.h5)")
    p.add_argument("--game", help="game name (default: inferred from <Game>/<run>/replay_logs)")
    p.add_argument("--checkpoints", help="checkpoint numbers, e.g. 0-4 or 0,3,5-7 (default: all)")
    p.add_argument(
        "--layout",
        choices=["auto", "logged", "circular"],
        default="auto",
        help="how the files were written (default: decided per file from add_count)",
    )
    subset = p.add_argument_group(
        "the Decision Transformer paper's subset (docs/dqn_replay_format.md)",
        "whole episodes drawn from checkpoints picked at random, from the first 100,000 slots "
        "of each, until N transitions are taken (the paper: --sample-transitions 500000 "
        "--checkpoints 0-49)",
    )
    subset.add_argument(
        "--sample-transitions",
        type=int,
        metavar="N",
        help="take this many transitions (the last draw is taken whole, so a little more)",
    )
    subset.add_argument(
        "--trajectories-per-checkpoint",
        type=int,
        metavar="K",
        help="episodes each draw takes from its checkpoint (default 10)",
    )
    subset.add_argument("--seed", type=int, help="seed of the draws (default 0)")
    _add_store_output_args(p)


def _add_convert_minari(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "convert-minari",
        help="convert a Minari Atari dataset into an episode store (needs atari-dt[minari])",
        description="Reads a local Minari dataset (nothing is downloaded) and applies the "
        "DQN-replay preprocessing (grayscale, 84x84 INTER_AREA) to its RGB screens.",
    )
    p.add_argument(
        "dataset",
        help="dataset id in MINARI_DATASETS_PATH (e.g. atari/breakout/expert-v0) or its directory",
    )
    p.add_argument("destination", help="episode store to write (.h5)")
    p.add_argument("--game", help="game name (default: from the dataset's env spec or id)")
    _add_store_output_args(p)


def _add_store_output_args(p: argparse.ArgumentParser) -> None:
    """How a conversion writes its episode store."""
    p.add_argument(
        "--compression",
        choices=["gzip", "lzf", "none"],
        default="gzip",
        help="compression of the stored frames (default: gzip level 1)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing destination")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_info(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("info", help="summarise an episode store")
    p.add_argument("path", help="episode store (.h5)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--reward-units", choices=["clipped", "raw"], default="clipped")
    p.add_argument("--plot", metavar="PNG", help="also save a return histogram here")


def _add_verify(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("verify", help="check an episode store's integrity")
    p.add_argument("path", help="episode store (.h5)")
    p.add_argument("--quick", action="store_true", help="skip decompressing every frame")


def _add_show(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("show", help="draw one context window as the model would see it")
    p.add_argument("path", help="episode store (.h5)")
    _add_config_args(p, "data", "data.context_len=10")
    p.add_argument("--episode", type=int, default=0, help="episode number in the store")
    p.add_argument("--step", type=int, help="current step of the window (default: middle)")
    p.add_argument("--out", required=True, help="PNG to write")


def _add_config_args(p: argparse.ArgumentParser, section: str, example: str) -> None:
    """``--config YAML`` and repeatable ``--set key=value`` (dotted keys of the config)."""
    p.add_argument("--config", help=f"YAML config whose {section} section is used")
    _add_set_arg(p, example)


def _add_set_arg(p: argparse.ArgumentParser, example: str) -> None:
    """Repeatable ``--set key=value`` (a dotted config key)."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. {example} (repeatable)",
    )


def _add_decision_args(p: argparse.ArgumentParser) -> None:
    """A run and the decision of it to explain: ``run_dir --episode I --step T [--data]``."""
    p.add_argument("run_dir", help="training run directory")
    p.add_argument("--episode", type=int, required=True, help="episode number in the store")
    p.add_argument("--step", type=int, required=True, help="step of that episode to explain")
    p.add_argument("--data", help="episode store (default: the run's data.path)")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so writers abort cleanly (temp files removed, nothing renamed).
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    from atari_dt.commands import run_command

    if argv is None:
        warnings.formatwarning = _one_line_warning
    return run_command(args)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """What the library warns about, as the CLI says it: one line, no source location."""
    return f"atari-dt: warning: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
