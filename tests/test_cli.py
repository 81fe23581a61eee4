"""The ``atari-dt`` command, run as a subprocess on tiny real samples."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALE_BANNER = ("A.L.E: Arcade Learning Environment", "[Powered by Stella]")
HEAVY = ("torch", "transformer_lens", "captum", "h5py", "ale_py", "gymnasium", "matplotlib")


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m atari_dt ARGS`` in ``cwd``; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "atari_dt", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run_ok(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI and require exit status 0."""
    result = run_cli(*args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def assert_user_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit 2 with one ``atari-dt: error: ...`` line on stderr (no traceback) containing every
    fragment. ALE's start-up banner, printed by its C++ library, is tolerated before it."""
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.strip() and not line.startswith(ALE_BANNER)
    ]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("atari-dt: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


# A short random-policy collection with a small step cap: a few real Seaquest episodes.
RANDOM_COLLECT = (
    "collect",
    "--policy",
    "random",
    "--workers",
    "1",
    "--steps",
    "300",
    "--max-episode-steps",
    "120",
)


@pytest.fixture(scope="module")
def sampled_store(workdir: Path) -> Path:
    """``collect --format h5``: a real Seaquest store with raw rewards and RAM."""
    run_ok(*RANDOM_COLLECT, "--format", "h5", "--out", "X.h5", cwd=workdir)
    return workdir / "X.h5"


@pytest.fixture(scope="module")
def converted_store(workdir: Path) -> Path:
    """``collect --format dqn-replay`` with a small buffer, then ``data convert``."""
    logs = workdir / "Seaquest" / "1" / "replay_logs"
    run_ok(
        *RANDOM_COLLECT, "--format", "dqn-replay", "--capacity", "200", "--out", logs, cwd=workdir
    )
    result = run_ok("data", "convert", logs, "converted.h5", "--no-progress", cwd=workdir)
    assert "wrote converted.h5" in result.stdout
    return workdir / "converted.h5"


# ---- start-up -----------------------------------------------------------------------------

IMPORT_PROBE = """
import json, sys
from atari_dt.cli import build_parser, main
build_parser()
for argv in (["--help"], ["data", "--help"], ["data", "show", "--help"],
             ["data", "convert", "--help"], ["--version"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))))
"""


def test_help_imports_no_heavy_dependency(tmp_path: Path) -> None:
    """Parser and --help/--version import no torch/transformer_lens/captum/h5py/ALE."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, *HEAVY],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_help_and_version(tmp_path: Path) -> None:
    """``--help`` lists the data stage and its sub-commands; ``--version`` names the version."""
    assert "data" in run_ok("--help", cwd=tmp_path).stdout
    sub = run_ok("data", "--help", cwd=tmp_path).stdout
    assert all(name in sub for name in ("convert", "info", "verify", "show"))
    assert run_ok("--version", cwd=tmp_path).stdout.strip() == "atari-dt 0.1.0"


def test_console_script_runs(tmp_path: Path) -> None:
    """The installed ``atari-dt`` entry point runs."""
    script = Path(sys.executable).with_name("atari-dt")
    if not script.exists():
        pytest.skip("no atari-dt console script beside this interpreter")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "usage: atari-dt" in result.stdout


# ---- the data pipeline --------------------------------------------------------------------


def test_sample_h5_then_info_json(sampled_store: Path, workdir: Path) -> None:
    """info --json of a sampled store: game, int transitions, episode lengths summing up."""
    summary = json.loads(run_ok("data", "info", sampled_store, "--json", cwd=workdir).stdout)
    assert summary["game"] == "Seaquest"
    assert isinstance(summary["transitions"], int) and summary["transitions"] >= 300
    episodes = summary["episodes"]
    assert isinstance(episodes, list) and episodes
    for e in episodes:
        assert set(e) >= {"length", "return", "complete"}
        assert isinstance(e["length"], int) and 1 <= e["length"] <= 120
        assert isinstance(e["return"], float) and isinstance(e["complete"], bool)
    assert sum(e["length"] for e in episodes) == summary["transitions"]
    assert summary["has_raw_rewards"] and summary["has_ram"]


def test_info_raw_units(sampled_store: Path, workdir: Path) -> None:
    """``--reward-units raw`` reports raw returns (multiples of Seaquest's score steps)."""
    raw = json.loads(
        run_ok("data", "info", sampled_store, "--json", "--reward-units", "raw", cwd=workdir).stdout
    )
    assert raw["reward_units"] == "raw"
    assert all(e["return"] % 20 == 0 for e in raw["episodes"])


def test_info_text_and_plot(sampled_store: Path, workdir: Path) -> None:
    """``data info --plot`` prints the summary and writes a PNG."""
    result = run_ok("data", "info", sampled_store, "--plot", "p.png", cwd=workdir)
    assert "Seaquest" in result.stdout and "transitions" in result.stdout
    assert is_png(workdir / "p.png")


def test_replay_sample_convert_verify_show(converted_store: Path, workdir: Path) -> None:
    """DQN-replay sample -> convert -> verify -> show: each exits 0; show writes a PNG."""
    verify = run_ok("data", "verify", converted_store, cwd=workdir)
    assert verify.stdout.startswith("OK ")
    run_ok("data", "verify", converted_store, "--quick", cwd=workdir)
    info = json.loads(run_ok("data", "info", converted_store, "--json", cwd=workdir).stdout)
    assert info["game"] == "Seaquest" and not info["has_raw_rewards"]
    assert sum(e["length"] for e in info["episodes"]) == info["transitions"]
    run_ok(
        "data",
        "show",
        converted_store,
        "--set",
        "data.context_len=8",
        "--out",
        "w.png",
        cwd=workdir,
    )
    assert is_png(workdir / "w.png")


def test_show_with_config_file(converted_store: Path, workdir: Path) -> None:
    """``data show --config`` with a shipped config and overrides, at a chosen step."""
    config = Path(__file__).resolve().parents[1] / "configs" / "data" / "demo_seaquest.yaml"
    run_ok(
        "data",
        "show",
        converted_store,
        "--config",
        config,
        "--set",
        "data.context_len=4",
        "--episode",
        "0",
        "--step",
        "0",
        "--out",
        "w0.png",
        cwd=workdir,
    )
    assert is_png(workdir / "w0.png")


def test_verify_reports_damage_with_exit_1(sampled_store: Path, workdir: Path) -> None:
    """``data verify`` of a damaged store exits 1 and lists the problem."""
    damaged = workdir / "damaged.h5"
    damaged.write_bytes(sampled_store.read_bytes())
    with h5py.File(damaged, "r+") as h5:
        h5["rtg"][0] = h5["rtg"][0] + 50
    result = run_cli("data", "verify", damaged, "--quick", cwd=workdir)
    assert result.returncode == 1
    assert "FAILED" in result.stdout and "/rtg differs" in result.stdout


# ---- user errors --------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["info", "verify", "show"])
def test_missing_store(tmp_path: Path, command: str) -> None:
    """A missing store is one error line naming it, exit 2."""
    extra = ["--out", "x.png"] if command == "show" else []
    assert_user_error(
        run_cli("data", command, "missing.h5", *extra, cwd=tmp_path),
        "episode store not found",
        "missing.h5",
    )


@pytest.mark.parametrize("command", ["info", "verify"])
def test_garbage_store(tmp_path: Path, command: str) -> None:
    """A file that is not HDF5 is one error line naming it, exit 2."""
    (tmp_path / "garbage.h5").write_bytes(b"\x00garbage" * 100)
    assert_user_error(
        run_cli("data", command, "garbage.h5", cwd=tmp_path),
        "garbage.h5",
        "not a readable HDF5 file",
    )


def test_unknown_config_key_via_set(converted_store: Path, workdir: Path) -> None:
    """An unknown key in --set is one error line naming it and the close valid key."""
    result = run_cli(
        "data",
        "show",
        converted_store,
        "--set",
        "data.context_length=8",
        "--out",
        "never.png",
        cwd=workdir,
    )
    assert_user_error(result, "data.context_length", "did you mean 'context_len'")
    assert not (workdir / "never.png").exists()


def test_unknown_key_in_config_file(converted_store: Path, tmp_path: Path) -> None:
    """An unknown key in a --config file is one error line naming the file."""
    config = tmp_path / "bad.yaml"
    config.write_text("data:\n  contxt_len: 3\n")
    result = run_cli(
        "data", "show", converted_store, "--config", config, "--out", "x.png", cwd=tmp_path
    )
    assert_user_error(result, "bad.yaml", "data.contxt_len")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--set", "data.context_len"], ["must look like section.key=value"]),
        (["--set", "data.context_len=many"], ["data.context_len: expected int"]),
        (["--episode", "99"], ["episode 99 out of range"]),
        (["--step", "100000"], ["--step 100000 out of range"]),
        (["--set", "data.context_len=100000"], ["longer than every selected episode"]),
    ],
    ids=["no-equals", "wrong-type", "episode", "step", "context"],
)
def test_show_user_errors(
    converted_store: Path, workdir: Path, args: list[str], fragments: list[str]
) -> None:
    """Bad show arguments are one error line, exit 2."""
    result = run_cli("data", "show", converted_store, *args, "--out", "e.png", cwd=workdir)
    assert_user_error(result, *fragments)


def test_raw_units_of_converted_store(converted_store: Path, workdir: Path) -> None:
    """DQN-replay stores have no raw rewards: ``--reward-units raw`` is a user error."""
    result = run_cli("data", "info", converted_store, "--reward-units", "raw", cwd=workdir)
    assert_user_error(result, "converted.h5", "reward_units='raw'")


def test_existing_outputs_need_force(
    sampled_store: Path, converted_store: Path, workdir: Path
) -> None:
    """collect and convert refuse to replace existing outputs without --force."""
    before = sampled_store.read_bytes()
    result = run_cli(
        "collect", "--policy", "random", "--steps", "10", "--out", sampled_store, cwd=workdir
    )
    assert_user_error(result, "X.h5 exists")
    assert sampled_store.read_bytes() == before
    logs = workdir / "Seaquest" / "1" / "replay_logs"
    result = run_cli("data", "convert", logs, sampled_store, "--no-progress", cwd=workdir)
    assert_user_error(result, "X.h5 exists")
    assert sampled_store.read_bytes() == before


def test_unknown_game(tmp_path: Path) -> None:
    """An unknown game is one error line with a suggestion, exit 2, and nothing written."""
    result = run_cli(
        "collect",
        "--policy",
        "random",
        "--game",
        "Seaquets",
        "--steps",
        "10",
        "--out",
        "s.h5",
        cwd=tmp_path,
    )
    assert_user_error(result, "unknown Atari game 'Seaquets'", "Seaquest")
    assert not (tmp_path / "s.h5").exists()


def test_user_error_is_one_line_with_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A UserError raised anywhere under a handler is one ``atari-dt: error:`` line, exit 2."""
    from atari_dt.cli import main
    from atari_dt.commands import data
    from atari_dt.errors import UserError

    def wrong(args: object) -> int:
        raise UserError("--frob 7 is not in [0, 3)")

    monkeypatch.setitem(data.HANDLERS, "info", wrong)
    assert main(["data", "info", "any.h5"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "atari-dt: error: --frob 7 is not in [0, 3)\n"


@pytest.mark.parametrize(
    "error",
    [ValueError("a library bug"), IndexError("a library bug"), RuntimeError("a library bug")],
    ids=["ValueError", "IndexError", "RuntimeError"],
)
def test_library_bugs_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception
) -> None:
    """Any exception other than a UserError (or a missing/existing path) is a bug: it
    propagates with its traceback instead of posing as a user mistake with exit 2."""
    from atari_dt.cli import main
    from atari_dt.commands import data

    def buggy(args: object) -> int:
        raise error

    monkeypatch.setitem(data.HANDLERS, "info", buggy)
    with pytest.raises(type(error), match="a library bug"):
        main(["data", "info", "any.h5"])
    assert "atari-dt: error" not in capsys.readouterr().err


def test_argparse_usage_errors(tmp_path: Path) -> None:
    """Missing required arguments are argparse usage errors, exit 2."""
    result = run_cli("data", "show", "x.h5", cwd=tmp_path)
    assert result.returncode == 2 and "--out" in result.stderr
    result = run_cli("data", "info", "x.h5", "--reward-units", "score", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.parametrize(
    ("fmt", "make_out"),
    [("dqn-replay", "file"), ("h5", "directory")],
    ids=["replay-onto-file", "h5-onto-directory"],
)
def test_force_onto_output_of_the_other_kind(tmp_path: Path, fmt: str, make_out: str) -> None:
    """--force onto an output of the other kind is a one-line error, no temp file."""
    out = tmp_path / "out"
    if make_out == "file":
        out.write_text("x")
    else:
        out.mkdir()
    result = run_cli(
        "collect",
        "--policy",
        "random",
        "--workers",
        "1",
        "--format",
        fmt,
        "--steps",
        "10",
        "--max-episode-steps",
        "20",
        "--out",
        out,
        "--force",
        cwd=tmp_path,
    )
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    if result.returncode != 0:
        assert_user_error(result, "out")


def test_sigterm_keeps_completed_episodes(tmp_path: Path) -> None:
    """SIGTERM during a collection exits 130 with a valid store of the completed episodes,
    marked unfinished, and no temporary file left."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atari_dt",
            "collect",
            "--policy",
            "random",
            "--workers",
            "1",
            "--max-episode-steps",
            "60",
            "--steps",
            "1000000",
            "--out",
            "big.h5",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, deadline = "", time.monotonic() + 60
    while "episodes=2" not in seen and process.poll() is None and time.monotonic() < deadline:
        seen += process.stderr.read(1)
    assert "episodes=2" in seen, seen[-400:]
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "continue with --resume" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5"]
    with h5py.File(tmp_path / "big.h5") as h5:
        assert h5.attrs["finalized"] and len(h5["episodes/length"]) >= 2
        assert not json.loads(h5.attrs["collection"])["finished"]
