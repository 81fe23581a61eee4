"""``Contexts`` from the store to the model, ``load_run`` from anywhere, and the public API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from seeds import seed

import atari_dt as adt
from atari_dt.cli import main
from atari_dt.datasets import ContextWindows, DataConfig, EpisodeStore, EpisodeStoreWriter
from atari_dt.datasets.contexts import ContextIndexError, Contexts
from atari_dt.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("frames", "actions", "rtg", "timesteps", "mask")


@pytest.fixture(scope="module")
def collected(tmp_path_factory) -> Path:
    """Real Seaquest play by the expert-to-random mixture: RAM, objects and behaviours."""
    path = tmp_path_factory.mktemp("collected") / "seaquest.h5"
    assert (
        main(
            [
                "collect",
                "--config",
                str(ROOT / "configs/collect/seaquest.yaml"),
                "--steps",
                "800",
                "--max-episode-steps",
                "200",
                "--workers",
                "1",
                "--seed",
                str(seed(0)),
                "--out",
                str(path),
            ]
        )
        == 0
    )
    return path


def assert_same_windows(a: Contexts, b: Contexts) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


# ---- cutting contexts from the store -----------------------------------------------------------


def test_store_contexts_are_the_training_windows_with_their_provenance(collected) -> None:
    """``store.contexts`` reads exactly the windows training cuts, plus where each came from:
    RAM of every step (zeros on padding), objects and behaviour at its last step."""
    windows = ContextWindows(collected, DataConfig(context_len=5, include_incomplete=True))
    indices = np.array([0, 1, 2, 3, 4, 57, 200, len(windows) - 1])
    batch = windows.get_batch(indices)
    with EpisodeStore.open(collected) as store:
        cut = store.contexts(batch.episodes, batch.steps, context_len=5)
        assert_same_windows(cut, batch)
        assert cut.game == "Seaquest" and cut.reward_units == "clipped" and len(cut) == 8
        for i, (episode, step) in enumerate(zip(cut.episodes, cut.steps, strict=True)):
            recorded = store.episode(int(episode))
            first = max(0, step - 4)
            expected_ram = np.zeros((5, 128), np.uint8)
            expected_ram[5 - (step + 1 - first) :] = recorded.ram[first : step + 1]
            np.testing.assert_array_equal(cut.ram[i], expected_ram)
            row = int(store.offsets[episode]) + int(step)
            assert cut.rows[i] == row
            for name, positions in cut.objects.items():
                np.testing.assert_array_equal(positions[i], store.h5["objects"][name][row])
            spec = store.behaviours[int(episode)]
            assert cut.behaviour[i].startswith(f"component {spec['component']}: {spec['name']}")
        with pytest.raises(ContextIndexError, match=r"episode 99 is not in .*\(0\.\.\d+\)"):
            store.contexts(99, 0, context_len=5)
        with pytest.raises(IndexError, match=r"step 9999 is not in episode 0 .*\(0\.\.\d+\)"):
            store.contexts(0, 9999, context_len=5)
    assert issubclass(ContextIndexError, UserError)  # the CLI prints it in one line


def test_sampled_contexts_are_drawn_as_training_draws(collected) -> None:
    """The same seed draws the same windows as training's sampler, sorted by store row."""
    config = DataConfig(context_len=3, sampling="episodes")
    windows = ContextWindows(collected, config)
    with EpisodeStore.open(collected) as store:
        drawn = store.sample_contexts(
            40, context_len=3, seed=seed(2), sampling="episodes", episodes=windows.episodes
        )
        again = store.sample_contexts(
            40, context_len=3, seed=seed(2), sampling="episodes", episodes=windows.episodes
        )
        with pytest.raises(ValueError, match="n >= 1"):
            store.sample_contexts(0, context_len=3)
    expected = windows.get_batch(
        np.sort(windows.sample_indices(np.random.default_rng(seed(2)), 40))
    )
    assert_same_windows(drawn, expected)
    assert_same_windows(drawn, again)
    assert np.all(np.diff(drawn.rows) >= 0) and set(drawn.episodes) <= set(windows.episodes)


# ---- the type itself ---------------------------------------------------------------------------


def test_indexing_concatenation_and_new_rtg(collected) -> None:
    with EpisodeStore.open(collected) as store:
        batch = store.contexts([0, 0, 1, 1], [3, 10, 0, 7], context_len=4)
    one = batch[2]
    assert len(one) == 1 and one.episodes.tolist() == [1] and one.behaviour == batch.behaviour[2:3]
    assert_same_windows(batch[-1], batch[[3]])
    assert_same_windows(Contexts.concat([batch[:2], batch[2:]]), batch)
    assert Contexts.concat([batch[:2], batch[2:]]).objects.keys() == batch.objects.keys()
    picked = batch[np.array([3, 0])]
    assert picked.steps.tolist() == [7, 3] and torch.equal(picked.frames[1], batch.frames[0])
    asked = batch.with_rtg(50.0)
    assert torch.equal(asked.rtg, torch.full((4, 4), 50.0)) and torch.equal(
        asked.frames, batch.frames
    )
    with pytest.raises(TypeError, match=r"read a field as an attribute: contexts\.frames"):
        batch["frames"]
    with pytest.raises(ValueError, match="repeat needs a batch of one"):
        batch.repeat(3)
    copies = one.repeat(5)  # views of one window: no copy of its frames
    assert copies.frames.shape[0] == 5 and copies.frames.data_ptr() == one.frames.data_ptr()


def test_shapes_are_checked_with_the_field_named() -> None:
    frames = torch.zeros(2, 3, 4, 84, 84, dtype=torch.uint8)
    good = {
        "actions": torch.zeros(2, 3, dtype=torch.long),
        "rtg": torch.zeros(2, 3),
        "timesteps": torch.zeros(2, 3, dtype=torch.long),
        "mask": torch.ones(2, 3, dtype=torch.bool),
    }
    Contexts(frames, **good)
    with pytest.raises(ValueError, match=r"Contexts.rtg must be a \[B, T\] = \[2, 3\] tensor"):
        Contexts(frames, **{**good, "rtg": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match=r"frames must be a \[B, T, S, H, W\] tensor"):
        Contexts(frames[0], **good)
    with pytest.raises(ValueError, match=r"Contexts\.episodes has 3 entries for 2 windows"):
        Contexts(frames, **good, episodes=np.arange(3))


def test_the_model_takes_contexts(tiny_run) -> None:
    """``model(contexts)`` is the tensor form; encoded contexts skip the CNN and give the same
    logits (the encoder is the same function of the same frames)."""
    with adt.load_run(tiny_run) as run:
        model, contexts = run.model, run.sample_contexts(6, seed=seed(3))
    with torch.no_grad():
        plain = model(*contexts.inputs())
        torch.testing.assert_close(model(contexts), plain, rtol=0, atol=1e-6)
        encoded = contexts.encoded(model)
        assert encoded.state_embeddings.shape == (6, 4, 32)
        torch.testing.assert_close(model(encoded), plain, rtol=0, atol=1e-6)
        logits, cache = model.run_with_cache(contexts)
        _, from_states = model.run_with_cache(encoded)
    # Caching the attention patterns switches to the unfused kernels (DESIGN.md): ~1e-6 apart.
    torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)
    assert "encoder.hook_out" in cache
    assert "encoder.hook_out" not in from_states  # the CNN did not run
    torch.testing.assert_close(
        from_states["blocks.1.hook_resid_post"],
        cache["blocks.1.hook_resid_post"],
        rtol=0,
        atol=1e-6,
    )
    with_frames = encoded.with_frames(contexts.frames // 2)
    assert with_frames.state_embeddings is None  # other frames: the embeddings are stale


# ---- load_run ----------------------------------------------------------------------------------


def test_a_run_opens_from_any_directory(tiny_run, seaquest_store_path, tmp_path, monkeypatch):
    record = json.loads((tiny_run / "store.json").read_text())
    assert record["path"] == str(seaquest_store_path.resolve())
    monkeypatch.chdir(tmp_path)  # nowhere near the run or its data
    with adt.load_run(tiny_run) as run:
        assert run.store.path.resolve() == seaquest_store_path.resolve()
        assert run.contexts(episode=1, step=50).steps.tolist() == [50]
        assert len(run.train_returns) == len(run.train_episodes) > 0


def copy_run(tiny_run: Path, seaquest_store_path: Path, where: Path) -> tuple[Path, Path]:
    """A copy of the tiny run whose store is a copy of its own (so it can move and change)."""
    from atari_dt.run import record_store

    run, store = where / "run", where / "data" / "store.h5"
    shutil.copytree(tiny_run, run)
    store.parent.mkdir()
    shutil.copy(seaquest_store_path, store)
    record_store(run, store)
    return run, store


def test_a_moved_store_names_itself_and_the_fix(tiny_run, seaquest_store_path, tmp_path):
    run, store = copy_run(tiny_run, seaquest_store_path, tmp_path)
    moved = tmp_path / "elsewhere.h5"
    store.rename(moved)
    with pytest.raises(
        UserError,
        match=r"store .* was trained on, .*store\.h5, is gone.*"
        r"load_run\(.*data=PATH\) or --data PATH",
    ):
        adt.load_run(run)
    with adt.load_run(run, data=moved) as opened:  # the same content at its new place
        assert opened.store.path == moved
    assert (
        main(
            [
                "scan",
                str(run),
                "--rtg",
                "0:6:3",
                "--contexts",
                "4",
                "--data",
                str(moved),
                "--out",
                str(tmp_path / "scan"),
            ]
        )
        == 0
    )
    assert main(["scan", str(run), "--rtg", "0:6:3", "--contexts", "4"]) == 2


def test_a_changed_store_is_refused(tiny_run, seaquest_store_path, seaquest_episodes, tmp_path):
    run, store = copy_run(tiny_run, seaquest_store_path, tmp_path)
    store.unlink()
    with EpisodeStoreWriter(store, game="Seaquest", n_actions=18) as writer:
        for e in seaquest_episodes[:2]:  # other data at the recorded place
            writer.add_episode(e.frames, e.actions, e.rewards)
    with pytest.raises(
        UserError,
        match=r"not the one .* was trained on .*episodes.*differ.*"
        r"changed since training",
    ):
        adt.load_run(run)
    with pytest.warns(UserWarning, match="not the one"):  # chosen explicitly: allowed, said
        adt.load_run(run, data=store).close()


def test_a_run_without_a_store_record_looks_beside_it(tiny_run, seaquest_store_path, tmp_path):
    """Runs made before store.json: the configured path as typed, then beside the run."""
    run, store = copy_run(tiny_run, seaquest_store_path, tmp_path)
    (run / "store.json").unlink()
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace(str(seaquest_store_path), "data/store.h5"))
    with adt.load_run(run) as opened:  # data/store.h5 is beside the run directory
        assert opened.store.path == tmp_path / "data" / "store.h5"
    store.unlink()
    with pytest.raises(UserError, match=r"data/store\.h5, is not at .*; pass its new place"):
        adt.load_run(run)


# ---- the public API ----------------------------------------------------------------------------


def test_the_public_api_is_lazy_and_complete() -> None:
    """``import atari_dt`` pulls in no torch; every exported name resolves."""
    code = (
        "import sys, atari_dt; assert 'torch' not in sys.modules, 'torch imported'; "
        "atari_dt.load_run; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    for name in adt.__all__:
        assert getattr(adt, name) is not None, name
    assert {"load_run", "Contexts", "HookedDecisionTransformer", "Target"} <= set(dir(adt))
    with pytest.raises(AttributeError, match="has no attribute 'nonexistent'"):
        adt.nonexistent  # noqa: B018


def test_the_notebook_example_runs_in_a_fresh_interpreter(tiny_run, tmp_path) -> None:
    """The README's example, verbatim but for the run's path, from another directory."""
    example = f"""
import atari_dt as adt
run = adt.load_run({str(tiny_run)!r})
ctx = run.contexts(episode=0, step=50)
logits, cache = run.model.run_with_cache(ctx)
result = adt.attribute_pixels(run.model, ctx, adt.Target(action=int(logits[0, -1].argmax())))
scan = adt.rtg_scan(run.model, run.sample_contexts(16), [0, 100, 200])
assert result.attributions.shape == (1, 4, 84, 84) and scan.action_probs.shape == (3, 18)
"""
    subprocess.run([sys.executable, "-c", example], check=True, cwd=tmp_path)


def test_the_api_examples_run(tiny_run: Path) -> None:
    """Every code block of docs/api.md, in order, on the tiny run (one example per name)."""
    import re

    page = (ROOT / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    code = "\n".join(blocks).replace('"runs/demo/train"', repr(str(tiny_run)))
    namespace: dict = {}
    exec(compile(code, "docs/api.md", "exec"), namespace)
    used = {name for name in adt.__all__ if f"adt.{name}" in code}
    missing = set(adt.__all__) - used - {"__version__"}
    assert not missing, f"docs/api.md has no example of {sorted(missing)}"


def test_index_forms(collected) -> None:
    """Ints (numpy and torch too), negative arrays and boolean masks pick windows; anything
    out of range is an error naming the batch, never an empty batch."""
    with EpisodeStore.open(collected) as store:
        batch = store.contexts([0, 0, 1], [3, 10, 7], context_len=4)
    for one in (np.int64(1), torch.tensor(1), -2, [1]):
        assert batch[one].steps.tolist() == [10], one
    assert batch[np.array([-1, 0])].steps.tolist() == [7, 3]
    assert batch[np.array([True, False, True])].steps.tolist() == [3, 7]
    assert batch[torch.tensor([False, True, False])].steps.tolist() == [10]
    for bad in (3, -4, [0, 5]):
        with pytest.raises(ContextIndexError, match=r"is not in a batch of 3 \(-3\.\.2\)"):
            batch[bad]
    with pytest.raises(ValueError, match=r"boolean mask over 3 windows must be \[3\]"):
        batch[np.array([True, False])]
    with pytest.raises(UserError, match="no windows asked for"):
        EpisodeStore.open(collected).contexts([], [], context_len=4)


def test_a_run_moved_together_with_its_data(tiny_run, seaquest_store_path, tmp_path) -> None:
    """The record keeps the store's path relative to the run too: move both, it still opens
    (and the fingerprint confirms the store)."""
    copy_run(tiny_run, seaquest_store_path, tmp_path / "before")
    (tmp_path / "before").rename(tmp_path / "after")
    with adt.load_run(tmp_path / "after" / "run") as opened:
        assert opened.store.path == tmp_path / "after" / "run" / ".." / "data" / "store.h5"


def test_resuming_on_other_data_is_refused(tiny_run, seaquest_store_path, tmp_path) -> None:
    from atari_dt.run import record_store

    run, store = copy_run(tiny_run, seaquest_store_path, tmp_path)
    record_store(run, store, resume=True)  # the same data: fine
    other = tmp_path / "other.h5"
    with EpisodeStoreWriter(other, game="Seaquest", n_actions=18) as writer:
        frames = np.zeros((6, 84, 84), np.uint8)
        writer.add_episode(frames, np.zeros(6, np.int64), np.ones(6, np.float32))
    with pytest.raises(UserError, match=r"--resume: the episode store .*other\.h5 is not the one"):
        record_store(run, other, resume=True)
    record_store(run, other)  # a new run (no --resume) records whatever it trains on


def test_context_probes_probe_what_the_store_knows(collected) -> None:
    """RTG always; behaviour when the episodes were played by more than one policy; each
    object seen in enough episodes. Contexts without provenance cannot be held out by episode."""
    from atari_dt.analysis.probes import MIN_PROBE_EPISODES, context_probes

    with EpisodeStore.open(collected) as store:
        contexts = store.sample_contexts(64, context_len=2, seed=seed(4))
        n_behaviours = len({b["component"] for b in store.behaviours})
    features = np.random.default_rng(seed(4)).normal(size=(2, 64, 8))
    probes = context_probes(features, contexts, ["0", "final"])
    assert "rtg" in probes and probes["rtg"].scores.shape == (2,)
    assert ("behaviour" in probes) == (len(set(contexts.behaviour)) > 1) and n_behaviours > 1
    for name, positions in contexts.objects.items():
        seen = len(np.unique(contexts.episodes[np.isfinite(positions).all(1)]))
        assert (f"{name}_xy" in probes) == (seen >= MIN_PROBE_EPISODES), name
    bare = Contexts(contexts.frames, contexts.actions, contexts.rtg, contexts.timesteps,
                    contexts.mask)  # fmt: skip
    with pytest.raises(UserError, match="probes hold out whole episodes"):
        context_probes(features, bare, ["0", "final"])
