"""What atari-dt promises about data that is silently wrong (issue 13, items 7 and 8).

``data convert`` refuses, in one line naming the file, checkpoint and values (exit 2), logs no
agent of the game could have written: actions outside the game's action set (values from
another game, or garbage), NaN or infinite rewards, an unknown game; nothing is left behind.
``data verify`` finds what would otherwise be trained on: datasets of the wrong dtype or shape,
and one flipped bit anywhere (every dataset carries the SHA-256 checksums recorded as it was
written); a store written before checksums existed still verifies. ``EpisodeStore.open`` (what
training uses) refuses wrong dtypes and shapes but never reads data to compare checksums.

Logs are written with the project's own DQN-replay writer; stores are real Seaquest episodes
(ALE frames, RAM and the objects read from it) written by the project's store writer, then
damaged with h5py or by flipping a bit of the file itself.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from seeds import seed

from atari_dt.cli import main
from atari_dt.datasets import (
    EpisodeStore,
    EpisodeStoreWriter,
    ReplayLogWriter,
    convert_replay_logs,
    store_writer,
)
from atari_dt.datasets.npy_gzip import load_npy_gz, save_npy_gz
from atari_dt.datasets.replay_files import replay_file
from atari_dt.datasets.store import StoreFormatError
from atari_dt.datasets.verify import verify_store
from atari_dt.envs.objects import object_names, object_positions
from atari_dt.errors import UserError

CAPACITY = 30  # two logged dumps (checkpoints 0 and 1) for the episodes below
# With 3 padding transitions before each: 47 transitions added; checkpoint 0 holds 0..28,
# checkpoint 1 the rest, its first (29, the second episode's last step) in its file's last slot.
LENGTHS = (12, 12, 14)


# ---- helpers ------------------------------------------------------------------------------


def write_logs(directory: Path, actions: list[np.ndarray] | None = None) -> Path:
    """DQN-replay logs of ``LENGTHS`` episodes of random frames; actions ``0..17`` (Seaquest's
    18, more than Pong's 6) unless given, rewards in {-1, 0, 1}."""
    rng = np.random.default_rng(seed(0))
    writer = ReplayLogWriter(directory, CAPACITY, compresslevel=1)
    for i, length in enumerate(LENGTHS):
        frames = rng.integers(1, 256, (length, 84, 84), dtype=np.uint8)
        episode_actions = np.arange(length) % 18 if actions is None else actions[i]
        writer.add_episode(frames, episode_actions, rng.integers(-1, 2, length).astype(float))
    writer.close()
    return directory


def set_logged(directory: Path, name: str, checkpoint: int, slot: int, value: Any) -> None:
    """Overwrite one slot of a checkpoint's ``action`` or ``reward`` file."""
    path = replay_file(directory, name, checkpoint)
    values = load_npy_gz(path)
    values[slot] = value
    save_npy_gz(path, values)


def fails_in_one_line(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    """The command printed one ``atari-dt: error:`` line holding ``fragments``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("atari-dt: error:"), err
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in err[-1], (fragment, err[-1])
    return err[-1]


def convert_cli(source: Path, destination: Path, *extra: str) -> int:
    return main(["data", "convert", str(source), str(destination), "--no-progress", *extra])


def nothing_written(directory: Path) -> bool:
    """No store and no temporary file in ``directory``."""
    return not directory.exists() or os.listdir(directory) == []


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory, seaquest_episodes) -> Path:
    """Real Seaquest episodes with raw rewards, RAM and the game objects read from the RAM (as
    ``collect --format h5`` writes them), 18 actions."""
    path = tmp_path_factory.mktemp("faults_data") / "seaquest.h5"
    with EpisodeStoreWriter(
        path,
        game="Seaquest",
        n_actions=18,
        raw_rewards=True,
        ram=True,
        objects=object_names("Seaquest"),
    ) as writer:
        for e in seaquest_episodes:
            writer.add_episode(
                e.frames,
                e.actions,
                e.rewards,
                raw_rewards=e.rewards,
                ram=e.ram,
                objects=object_positions("Seaquest", e.ram),
            )
    return path


@pytest.fixture
def store(real_store: Path, tmp_path: Path) -> Path:
    """A private copy of the real store, to damage."""
    return Path(shutil.copy(real_store, tmp_path / "store.h5"))


def replace_dataset(path: Path, name: str, data: np.ndarray) -> None:
    """Put ``data`` where dataset ``name`` was (as a careless script would)."""
    with h5py.File(path, "r+") as h5:
        del h5[name]
        h5[name] = data


def flip_bit_on_disk(path: Path, name: str, row: int, byte: int = 0, bit: int = 0) -> None:
    """Flip one bit of row ``row`` of an uncompressed chunked dataset in the file itself (what
    a bad disk or a bad copy does), not through HDF5."""
    with h5py.File(path, "r") as h5:
        dataset = h5[name]
        assert dataset.compression is None and row < dataset.chunks[0]
        row_bytes = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:]))
        where = dataset.id.get_chunk_info(0).byte_offset + row * row_bytes + byte
    with open(path, "r+b") as f:
        f.seek(where)
        value = f.read(1)[0]
        f.seek(where)
        f.write(bytes([value ^ (1 << bit)]))


def problems_of(path: Path, **options: Any) -> list[str]:
    report = verify_store(path, **options)
    assert not report.ok, "verify should have found the damage"
    return report.problems


# ---- convert refuses logs no agent of the game wrote ----------------------------------------


@pytest.mark.parametrize("bad_action", [99, -3])
def test_convert_refuses_actions_outside_the_games_action_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_action: int
) -> None:
    """An action outside Seaquest's 18 (in the second checkpoint) is one error line naming the
    file, the checkpoint, the value and the action set; nothing is written."""
    actions = [np.arange(n) % 18 for n in LENGTHS]
    actions[2][4] = bad_action  # the last episode lies in checkpoint 1
    logs = write_logs(tmp_path / "Seaquest" / "1" / "replay_logs", actions)
    assert convert_cli(logs, tmp_path / "out" / "s.h5") == 2
    fails_in_one_line(
        capsys,
        "$store$_action_ckpt.1.gz",
        "checkpoint 1",
        f"actions outside Seaquest's action set [0, 18): {bad_action} (at slots 7; 1 in all)",
        "no Atari game has such actions",
    )
    assert nothing_written(tmp_path / "out")


def test_convert_refuses_logs_of_another_game(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seaquest logs (actions up to 17) under ``Pong/1/replay_logs`` are refused: Pong has 6
    actions. The same logs under their own game's name convert, recording 18 actions."""
    logs = write_logs(tmp_path / "Pong" / "1" / "replay_logs")
    assert convert_cli(logs, tmp_path / "out" / "p.h5") == 2
    line = fails_in_one_line(capsys, "$store$_action_ckpt.0.gz", "Pong's action set [0, 6)")
    assert re.search(r"\): 6, 7, 8, 9, 10 \(at slots .*in all\); are these logs of another", line)
    assert nothing_written(tmp_path / "out")
    # the game given explicitly is checked the same way, and the right one converts
    with pytest.raises(UserError, match=r"outside Pong's action set \[0, 6\)"):
        convert_replay_logs(logs, tmp_path / "out" / "p.h5", game="pong", progress=False)
    assert convert_cli(logs, tmp_path / "s.h5", "--game", "Seaquest") == 0
    with EpisodeStore.open(tmp_path / "s.h5") as store:
        assert (store.game, store.n_actions, store.n_transitions) == ("Seaquest", 18, sum(LENGTHS))
    assert verify_store(tmp_path / "s.h5").ok


@pytest.mark.parametrize("bad_reward", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_convert_refuses_non_finite_rewards(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_reward: float
) -> None:
    """A NaN or infinite reward (slot 3, the first real transition after the padding) is one
    error line naming the reward file, the checkpoint and the value; nothing is written."""
    logs = write_logs(tmp_path / "Seaquest" / "1" / "replay_logs")
    set_logged(logs, "reward", 0, 3, bad_reward)
    assert convert_cli(logs, tmp_path / "out" / "s.h5") == 2
    fails_in_one_line(
        capsys,
        "$store$_reward_ckpt.0.gz",
        f"checkpoint 0 holds rewards that are not finite: {bad_reward:g} (at slots 3; 1 in all)",
    )
    assert nothing_written(tmp_path / "out")


def test_convert_refuses_an_unknown_game(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--game NotAGame`` (or a path naming no ALE game) is refused before anything is
    written, with close matches when there are any."""
    logs = write_logs(tmp_path / "Seaquest" / "1" / "replay_logs")
    assert convert_cli(logs, tmp_path / "out" / "s.h5", "--game", "NotAGame") == 2
    fails_in_one_line(capsys, "unknown Atari game 'NotAGame'")
    assert nothing_written(tmp_path / "out")
    typo = tmp_path / "Seaquets" / "1" / "replay_logs"
    shutil.copytree(logs, typo)
    with pytest.raises(
        UserError,
        match=r"unknown Atari game 'Seaquets'; did you mean Seaquest\? \(taken from the path .*"
        r"Seaquets/1/replay_logs; pass --game\)",
    ):
        convert_replay_logs(typo, tmp_path / "out" / "s.h5", progress=False)
    assert nothing_written(tmp_path / "out")


def test_store_writer_refuses_what_no_store_may_hold(tmp_path: Path) -> None:
    """The store writer itself (under convert and collect) refuses actions outside its action
    set and non-finite rewards, before anything is appended."""
    frames = np.zeros((3, 84, 84), np.uint8)
    with EpisodeStoreWriter(tmp_path / "s.h5", game="Pong", n_actions=6) as writer:
        with pytest.raises(ValueError, match=r"actions \[6\] are outside .*\[0, 6\)"):
            writer.add_episode(frames, np.array([0, 6, 1]), np.zeros(3))
        with pytest.raises(ValueError, match="rewards must be finite"):
            writer.add_episode(frames, np.zeros(3, int), np.array([0.0, np.nan, 0.0]))
        with pytest.raises(ValueError, match="actions must be integers"):
            writer.add_episode(frames, np.array([0.0, 1.5, 2.0]), np.zeros(3))
        assert writer.n_transitions == 0
        writer.add_episode(frames, np.arange(3), np.zeros(3))
    assert verify_store(tmp_path / "s.h5").ok


# ---- verify (and open) refuse wrong dtypes and shapes ----------------------------------------


@pytest.mark.parametrize(
    ("name", "convert", "message"),
    [
        ("actions", lambda a: a.astype(np.float64), "/actions is float64, expected an integer"),
        ("frames", lambda f: f.astype(np.float32), "/frames is float32, expected uint8"),
        (
            "frames",
            lambda f: f[:, :64, :64],
            "/frames holds 64x64 frames, but the store was written with 84x84",
        ),
    ],
    ids=["float64-actions", "float32-frames", "64x64-frames"],
)
def test_verify_catches_wrong_dtypes_and_shapes(
    store: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    convert: Any,
    message: str,
) -> None:
    """Float64 actions, float32 frames and 64x64 frames are reported by ``data verify`` (exit 1,
    FAILED) and refused at open, so training never starts on them."""
    with h5py.File(store, "r") as h5:
        data = convert(h5[name][:])
    replace_dataset(store, name, data)
    assert any(message in p for p in problems_of(store)), problems_of(store)
    assert main(["data", "verify", str(store)]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and message in out
    with pytest.raises(StoreFormatError, match=re.escape(message)):
        EpisodeStore.open(store)


def test_train_refuses_a_store_with_float64_actions(
    store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train`` on a store whose actions became float64 stops in one line naming the dataset
    (exit 2) instead of training on it."""
    with h5py.File(store, "r") as h5:
        actions = h5["actions"][:].astype(np.float64)
    replace_dataset(store, "actions", actions)
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(store), "context_len": 4},
                "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_timestep": 512},
                "train": {"max_steps": 2, "batch_size": 4, "seed": seed(0)},
            }
        )
    )
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    fails_in_one_line(capsys, "store.h5", "/actions is float64, expected an integer type")
    assert not list((tmp_path / "run").glob("checkpoints/step_*"))


# ---- verify finds one flipped bit -----------------------------------------------------------


def test_verify_catches_a_flipped_bit_in_actions(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One flipped bit in /actions (still a valid action: only the checksum can tell) is found
    and named; opening the store does not compare checksums (it stays fast)."""
    with h5py.File(store, "r") as h5:
        before = int(h5["actions"][100])
    flip_bit_on_disk(store, "actions", row=100)
    with EpisodeStore.open(store) as opened:
        after, n = int(opened.column("actions")[100]), opened.n_transitions
    assert after == before ^ 1 and 0 <= after < 18
    assert problems_of(store) == [
        "/actions differs from the checksum recorded when the store was written, in rows "
        f"0..{n - 1}: its data changed since (a flipped bit or an edit)"
    ]
    assert main(["data", "verify", str(store), "--quick"]) == 1
    assert "/actions differs from the checksum" in capsys.readouterr().out


def test_verify_catches_a_flipped_bit_in_objects(store: Path) -> None:
    """One flipped low bit of an object's x position (a change of one float32 ulp, invisible
    to any range check) is found and the object named."""
    with h5py.File(store, "r") as h5:
        row = int(np.flatnonzero(np.isfinite(h5["objects/player"][:, 0]))[0])
        before = float(h5["objects/player"][row, 0])
    flip_bit_on_disk(store, "objects/player", row=row)
    with h5py.File(store, "r") as h5:
        assert float(h5["objects/player"][row, 0]) == pytest.approx(before, rel=1e-6)
        assert float(h5["objects/player"][row, 0]) != before
    problems = problems_of(store, check_frames=False)
    assert len(problems) == 1 and problems[0].startswith(
        "/objects/player differs from the checksum recorded when the store was written"
    )


def test_verify_checks_frames_unless_quick(store: Path) -> None:
    """A changed pixel (through HDF5, so the chunk still decompresses) is found by a full
    verify; ``--quick`` reads no frames, so it says their checksum was not compared."""
    with h5py.File(store, "r+") as h5:
        h5["frames"][5, 10, 10] ^= 1
    assert problems_of(store)[0].startswith("/frames differs from the checksum")
    quick = verify_store(store, check_frames=False)
    assert quick.ok and quick.frames_checked == 0
    assert quick.notes == ["frame checksums not compared (frames not read: --quick)"]


def test_verify_catches_a_replaced_or_missing_checksummed_dataset(store: Path) -> None:
    """Deleting an optional dataset, or its checksum, is reported, not skipped."""
    with h5py.File(store, "r+") as h5:
        del h5["objects/oxygen"]
        del h5["checksums/ram"]
    problems = problems_of(store, check_frames=False)
    assert "/ram has no checksum recorded (added or replaced after the store was written)" in (
        problems
    )
    assert "/checksums/objects/oxygen is recorded but /objects/oxygen is missing" in problems


def test_verify_reports_an_unreadable_ram_chunk(store: Path) -> None:
    """A compressed RAM chunk overwritten with garbage is reported (even by ``--quick``, which
    still checks RAM's checksum), not raised."""
    with h5py.File(store, "r") as h5:
        info = h5["ram"].id.get_chunk_info(0)
    with open(store, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    problems = problems_of(store, check_frames=False)
    assert any(re.fullmatch(r"/ram rows 0\.\.\d+ unreadable: .*", p) for p in problems), problems


def test_non_finite_rewards_in_a_store_are_reported(store: Path) -> None:
    """A NaN reward (which ``abs(r) > 1`` cannot see) is reported by verify."""
    with h5py.File(store, "r+") as h5:
        h5["rewards"][7] = np.nan
    assert "/rewards holds 1 NaN or infinite values (first at row 7)" in problems_of(store)


# ---- checksums are right however the rows were written, and old stores still verify ---------


def test_an_old_store_without_checksums_still_verifies(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A store as written before checksums existed (no /checksums, no frame_shape attribute)
    opens, and verifies OK saying that no checksums were recorded."""
    with h5py.File(store, "r+") as h5:
        del h5["checksums"]
        del h5.attrs["frame_shape"]
    report = verify_store(store)
    assert report.ok, report.problems
    assert report.frames_checked == report.transitions
    assert any(note.startswith("no checksums recorded") for note in report.notes)
    assert main(["data", "verify", str(store)]) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_checksums_hold_whatever_order_rows_were_written_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With blocks of 5 rows, logged dumps (each dump's first transition is the last slot of its
    file, so it is written last) and a resumed store (the last block only partly written before)
    still get the checksums of the data as stored; a flipped bit is then placed in its block."""
    monkeypatch.setattr(store_writer, "checksum_block_rows", lambda row_shape, dtype: 5)
    logs = write_logs(tmp_path / "Seaquest" / "1" / "replay_logs")
    converted = convert_replay_logs(logs, tmp_path / "c.h5", progress=False)
    with h5py.File(converted, "r") as h5:
        assert h5["checksums/frames"].shape == (-(-sum(LENGTHS) // 5), 32)
    assert verify_store(converted).ok, verify_store(converted).problems

    resumed = Path(shutil.copy(converted, tmp_path / "r.h5"))
    writer = EpisodeStoreWriter.resume(resumed)
    with writer:
        frames = np.full((7, 84, 84), 3, np.uint8)
        writer.add_episode(frames, np.arange(7), np.ones(7))
    assert verify_store(resumed).ok, verify_store(resumed).problems

    flip_bit_on_disk(resumed, "actions", row=sum(LENGTHS) + 3)  # row 41: block 8, 40..44
    assert problems_of(resumed) == [
        "/actions differs from the checksum recorded when the store was written, in rows "
        "40..44: its data changed since (a flipped bit or an edit)"
    ]
