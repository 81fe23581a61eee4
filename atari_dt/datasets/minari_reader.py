"""Convert a Minari Atari dataset (e.g. ``atari/breakout/expert-v0``) into an episode store.

What Minari's Atari datasets hold (minari 0.5.x; the ``atari/<game>/expert-v0`` family was made by
``scripts/atari/create_datasets.py`` of Farama-Foundation/minari-dataset-generation-scripts):
RGB screens ``uint8 [L + 1, 210, 160, 3]`` per episode (the last one is the observation after
the last action), actions ``[L]`` indexing the env's action set, raw rewards ``[L]`` and
``terminations`` / ``truncations`` ``[L]``. The env is plain ``ALE/<Game>-v5`` (its spec is kept
in the dataset): ALE's own frame skip (4; rewards summed over the skipped frames, the screen
of the last one returned, no max-pool), sticky actions as its ``repeat_action_probability``
says (0 in the expert datasets), the minimal action set, a 27,000-step cap (truncation).
Datasets written by minari >= 0.5.3 may hold JPEG-compressed (lossy) screens.

The conversion applies the DQN-replay preprocessing to every screen (:func:`dqn_frames`) and
records, in the store's ``preprocessing``, the dataset's settings and how they differ from
DQN-replay's (:data:`atari_dt.datasets.convert.DQN_REPLAY_PREPROCESSING`). One episode is in
memory at a time (its 84x84 frames; its screens in chunks where stored raw in HDF5).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.datasets.convert import DQN_REPLAY_PREPROCESSING
from atari_dt.datasets.store_writer import EpisodeStoreWriter
from atari_dt.errors import UserError

MINARI_INSTALL = "pip install 'atari-dt[minari]'"
SCREEN_SHAPE = (210, 160, 3)  # ALE's RGB screen (obs_type="rgb")
_CHUNK_SCREENS = 512  # RGB screens converted at a time (~50 MB)
_HDF5_FILE = "main_data.hdf5"  # minari's HDF5 storage file, inside the dataset's data/


def import_minari() -> Any:
    """The ``minari`` module.

    Raises:
        UserError: minari is not installed (names the ``pip install``).
    """
    try:
        import minari
    except ImportError:
        raise UserError(
            f"reading Minari datasets needs the minari package: {MINARI_INSTALL}"
        ) from None
    return minari


def dqn_frames(screens: np.ndarray) -> np.ndarray:
    """DQN-replay frames of RGB screens: grayscale, then ``cv2.resize`` to 84x84 with
    ``INTER_AREA`` (as gymnasium's ``AtariPreprocessing``, without its max-pool).

    ``cv2.COLOR_RGB2GRAY`` gives exactly ALE's grayscale screen (``getScreenGrayscale``, which
    ``make_env`` uses): measured equal on every pixel of 2,400 screens of 8 games (119 of the
    128 NTSC colours).

    Args:
        screens: uint8 ``[m, 210, 160, 3]``.

    Returns:
        uint8 ``[m, 84, 84]``.
    """
    import cv2

    frames = np.empty((len(screens), 84, 84), dtype=np.uint8)  # (m, 84, 84)
    for i, screen in enumerate(screens):
        gray = cv2.cvtColor(np.ascontiguousarray(screen), cv2.COLOR_RGB2GRAY)  # (210, 160)
        frames[i] = cv2.resize(gray, (84, 84), interpolation=cv2.INTER_AREA)
    return frames


@dataclass(frozen=True)
class MinariEpisode:
    """One episode as the dataset holds it."""

    id: int
    screens: Any  # uint8 (L + 1, 210, 160, 3): an array, or an h5py dataset read in slices
    actions: np.ndarray  # (L,) indices into the dataset's action set
    rewards: np.ndarray  # (L,) raw game rewards
    terminated: bool  # its last step ended the game
    truncated: bool  # its last step hit the step cap


def open_minari_dataset(dataset: str | Path) -> Any:
    """A ``minari.MinariDataset`` from an id in the local Minari root (``MINARI_DATASETS_PATH``,
    default ``~/.minari/datasets``; nothing is downloaded) or a dataset directory (the one
    holding ``data/``, or ``data/`` itself).

    Raises:
        UserError: minari missing; no such dataset (lists the local ones); unreadable dataset.
    """
    minari = import_minari()
    data = _data_directory(Path(dataset)) if Path(dataset).is_dir() else None
    try:
        return minari.load_dataset(str(dataset)) if data is None else minari.MinariDataset(data)
    except FileNotFoundError:
        raise UserError(_not_found(minari, str(dataset))) from None
    except ValueError as err:  # minari's own: an unsupported version, no data in the path
        raise UserError(f"cannot read Minari dataset {dataset}: {err}") from None


def _data_directory(path: Path) -> Path:
    for candidate in (path / "data", path):
        if (candidate / "metadata.json").is_file():
            return candidate
    raise UserError(f"{path} is not a Minari dataset directory (no data/metadata.json in it)")


def _not_found(minari: Any, dataset_id: str) -> str:
    from minari.storage.datasets_root_dir import get_dataset_path

    try:
        local = sorted(minari.list_local_datasets())
    except Exception:  # a damaged local root must not hide the real message
        local = []
    listed = ", ".join(local[:10]) + (" ..." if len(local) > 10 else "") if local else "none"
    return (
        f"no Minari dataset {dataset_id!r} in {get_dataset_path()} (MINARI_DATASETS_PATH); "
        f"local datasets: {listed}; fetch it with `minari download {dataset_id}` or give its "
        "directory"
    )


def describe_minari_dataset(ds: Any, game: str | None = None) -> dict[str, Any]:
    """What the dataset says about how it was made, checked to be Atari RGB data.

    Args:
        ds: a ``minari.MinariDataset``.
        game: the game (any spelling ALE knows); default from the dataset's env spec or id.

    Returns:
        ``{"game", "n_actions", "full_action_space", "env_id", "env_kwargs",
        "max_episode_steps", "plain_ale"}`` (``plain_ale``: made by ale-py's ``AtariEnv``
        with no extra wrappers, so ALE's frame skip without max-pool is known to apply).

    Raises:
        UserError: not an Atari RGB dataset (observation space, action space), no game known,
            or ``game`` contradicts the dataset's env.
    """
    import gymnasium as gym

    obs, act = ds.observation_space, ds.action_space
    if not (
        isinstance(obs, gym.spaces.Box) and obs.shape == SCREEN_SHAPE and obs.dtype == np.uint8
    ):
        raise UserError(
            f"Minari dataset {ds.id} is not Atari RGB data: its observation space is {obs}, "
            f"expected Box(0, 255, {SCREEN_SHAPE}, uint8) (ALE obs_type='rgb')"
        )
    if not isinstance(act, gym.spaces.Discrete):
        raise UserError(f"Minari dataset {ds.id}: action space {act}, expected Discrete(n)")
    spec = ds.env_spec
    kwargs = dict(spec.kwargs) if spec is not None else {}
    game = _resolve_game(ds.id, spec, game)
    return {
        "game": game,
        "n_actions": int(act.n),
        "full_action_space": _full_action_space(game, int(act.n), kwargs),
        "env_id": spec.id if spec is not None else None,
        "env_kwargs": json.loads(json.dumps(kwargs, default=str)),  # JSON-able for the store
        "max_episode_steps": spec.max_episode_steps if spec is not None else None,
        "plain_ale": spec is not None
        and spec.entry_point == "ale_py.env:AtariEnv"
        and not spec.additional_wrappers,
    }


def _resolve_game(dataset_id: str, spec: Any, game: str | None) -> str:
    from atari_dt.envs.games import canonical_game

    from_spec = canonical_game(spec.id) if spec is not None and spec.id.startswith("ALE/") else None
    if game is not None:
        game = canonical_game(game)
        if from_spec is not None and game != from_spec:
            raise UserError(
                f"--game {game}, but Minari dataset {dataset_id} was made with {spec.id}"
            )
        return game
    if from_spec is not None:
        return from_spec
    match = re.fullmatch(r"atari/([^/]+)/.+", dataset_id)
    if match is None:
        raise UserError(f"cannot tell the game of Minari dataset {dataset_id}; pass --game")
    return canonical_game(match.group(1))


def _full_action_space(game: str, n_actions: int, kwargs: dict[str, Any]) -> bool:
    """Whether actions index ALE's full 18-action set (else the game's minimal set).

    Raises:
        UserError: ``n_actions`` fits neither set.
    """
    from atari_dt.envs.games import minimal_action_count

    minimal = minimal_action_count(game)
    if "full_action_space" in kwargs:
        full = bool(kwargs["full_action_space"])
    else:
        full = n_actions == 18 and minimal < 18
    if n_actions != (18 if full else minimal):
        raise UserError(
            f"{n_actions} actions fit neither {game}'s minimal action set ({minimal}) nor the "
            "full set (18)"
        )
    return full


def minimal_action_table(game: str) -> np.ndarray:
    """``table[k]``: the minimal-set index of full-set action ``k`` (ALE's action number), or
    -1 where the game's minimal set lacks it. int64 ``[18]``."""
    import ale_py
    import gymnasium as gym

    from atari_dt.envs.games import env_id

    gym.register_envs(ale_py)
    env = gym.make(env_id(game), full_action_space=False)
    try:
        minimal = env.unwrapped.ale.getMinimalActionSet()
    finally:
        env.close()
    table = np.full(18, -1, dtype=np.int64)
    table[[action.value for action in minimal]] = np.arange(len(minimal))
    return table


def iter_minari_episodes(ds: Any) -> Iterator[MinariEpisode]:
    """The dataset's episodes in order. Screens stored raw in minari's HDF5 storage are read
    in slices straight from the file (bounded memory; minari >= 0.5.3 would try to decode the
    raw screens of a pre-0.5.3 dataset as JPEG and fail); otherwise minari decodes each
    episode whole (JPEG or Arrow).

    Raises:
        UserError: an episode whose arrays do not line up.
    """
    if screens_stored_raw(ds):
        yield from _iter_hdf5(ds, Path(ds.storage.data_path) / _HDF5_FILE)
        return
    for episode in ds.iterate_episodes():
        yield _checked(ds.id, episode.id, episode.observations, *_columns(episode))


def screens_stored_raw(ds: Any) -> bool:
    """Whether the dataset's screens are raw uint8 arrays in minari's HDF5 storage (else
    JPEG-compressed, or in another storage), judged from the file, not from its metadata."""
    import h5py

    if ds.storage.metadata.get("data_format") != "hdf5" or not len(ds.episode_indices):
        return False
    with h5py.File(Path(ds.storage.data_path) / _HDF5_FILE, "r") as handle:
        screens = handle[f"episode_{int(ds.episode_indices[0])}/observations"]
        return isinstance(screens, h5py.Dataset) and screens.dtype == np.uint8


def screens_jpeg(ds: Any) -> bool:
    """Whether the dataset's screens went through JPEG (lossy) compression: minari 0.5.3
    compressed every image space, 0.5.4 unless ``jpeg_encoding=False``, earlier ones never
    (their raw screens are read from the file; a storage without the flag counts as JPEG)."""
    if screens_stored_raw(ds):
        return False
    return bool(getattr(ds.storage, "jpeg_encoding", True))


def _iter_hdf5(ds: Any, path: Path) -> Iterator[MinariEpisode]:
    import h5py

    with h5py.File(path, "r") as handle:
        for index in ds.episode_indices:
            group = handle[f"episode_{int(index)}"]
            columns = (group[name][()] for name in _COLUMNS)
            yield _checked(ds.id, int(index), group["observations"], *columns)


_COLUMNS = ("actions", "rewards", "terminations", "truncations")


def _columns(episode: Any) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(getattr(episode, name)) for name in _COLUMNS)


def _checked(
    dataset_id: str,
    index: int,
    screens: Any,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminations: np.ndarray,
    truncations: np.ndarray,
) -> MinariEpisode:
    n = len(rewards)
    where = f"Minari dataset {dataset_id}, episode {index}"
    if n == 0 or len(screens) != n + 1 or actions.shape != (n,):
        raise UserError(
            f"{where}: {len(screens)} observations, actions of shape {list(actions.shape)} and "
            f"{n} rewards; expected L + 1 observations and L actions, L >= 1"
        )
    if tuple(screens.shape[1:]) != SCREEN_SHAPE:
        raise UserError(f"{where}: observations of shape {list(screens.shape)}, not RGB screens")
    return MinariEpisode(
        id=int(index),
        screens=screens,
        actions=actions,
        rewards=np.asarray(rewards, dtype=np.float64),
        terminated=bool(terminations[-1]),
        truncated=bool(truncations[-1]),
    )


def episode_frames(episode: MinariEpisode, chunk: int = _CHUNK_SCREENS) -> np.ndarray:
    """The DQN-replay frames of the screens the agent acted on (all but the last one).
    uint8 ``[L, 84, 84]``; the RGB screens are read ``chunk`` at a time."""
    length = len(episode.actions)
    frames = np.empty((length, 84, 84), dtype=np.uint8)  # (L, 84, 84)
    for start in range(0, length, chunk):
        stop = min(start + chunk, length)
        frames[start:stop] = dqn_frames(np.asarray(episode.screens[start:stop]))
    return frames


def convert_minari_dataset(
    dataset: str | Path,
    destination: str | Path,
    *,
    game: str | None = None,
    compression: str | None = "gzip",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a Minari Atari dataset as an episode store, episode by episode.

    Transition ``i`` of an episode is (frame of screen ``i``, action ``i``, reward ``i``); the
    screen after the last action is dropped. Rewards are stored clipped to [-1, 1] with the raw
    ones in ``/raw_rewards``. An episode that ended (termination: game over; truncation: the
    step cap) has its terminal flag set and is complete; one that did neither is marked cut.
    Actions of a full-action-space dataset are mapped to the game's minimal set (the one the
    project's envs and DQN-replay use); ``n_actions`` is the minimal set's size.

    Args:
        dataset: a dataset id in the local Minari root, or a dataset directory.
        destination: the ``.h5`` to write (atomically: nothing appears there on failure).
        game: the game, when the dataset does not say it (checked against it otherwise).
        compression: of the store's frames (``gzip``, ``lzf`` or None).
        overwrite: replace an existing destination.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        the destination path.

    Raises:
        UserError: minari missing; unknown dataset; not Atari RGB data; no episodes; an action
            outside the game's minimal set.
    """
    from tqdm.auto import tqdm

    ds = open_minari_dataset(dataset)
    info = describe_minari_dataset(ds, game)
    if ds.total_episodes == 0:
        raise UserError(f"Minari dataset {ds.id} holds no episodes")
    table = minimal_action_table(info["game"]) if info["full_action_space"] else None
    source, preprocessing = _records(ds, dataset, info)
    with (
        EpisodeStoreWriter(
            destination,
            game=info["game"],
            n_actions=info["n_actions"] if table is None else int((table >= 0).sum()),
            source=source,
            preprocessing=preprocessing,
            behaviour_policy={"algorithm": ds.storage.metadata.get("algorithm_name")},
            raw_rewards=True,
            compression=compression,
            overwrite=overwrite,
        ) as writer,
        tqdm(
            total=ds.total_steps, unit="frame", desc=f"convert {ds.id}", disable=not progress
        ) as bar,
    ):
        for episode in iter_minari_episodes(ds):
            _add(writer, episode, _minimal_actions(ds.id, episode, info["game"], table))
            bar.update(len(episode.actions))
    return Path(destination)


def _minimal_actions(
    dataset_id: str, episode: MinariEpisode, game: str, table: np.ndarray | None
) -> np.ndarray:
    if table is None:
        return episode.actions
    mapped = table[episode.actions]  # (L,)
    if (mapped < 0).any():
        missing = np.unique(episode.actions[mapped < 0])[:5].tolist()
        raise UserError(
            f"Minari dataset {dataset_id}, episode {episode.id}: full-set actions {missing} are "
            f"not in {game}'s minimal action set, which the store keeps (as DQN-replay)"
        )
    return mapped


def _add(writer: EpisodeStoreWriter, episode: MinariEpisode, actions: np.ndarray) -> None:
    ended = episode.terminated or episode.truncated
    writer.add_episode(
        episode_frames(episode),
        actions,
        episode.rewards,  # clipped by the writer
        complete=ended,
        terminated=ended,
        raw_rewards=episode.rewards,
        behaviour={
            "minari_episode": episode.id,
            "end": "terminated" if episode.terminated else "truncated" if ended else "cut",
        },
    )


def _records(ds: Any, dataset: str | Path, info: dict[str, Any]) -> tuple[dict, dict]:
    """The store's ``source`` and ``preprocessing``: the dataset's settings next to
    DQN-replay's, and the list of what differs (only what the dataset's spec says)."""
    kwargs = info["env_kwargs"]
    metadata = ds.storage.metadata
    source = {
        "kind": "minari",
        "dataset_id": ds.id,
        "path": str(Path(ds.storage.data_path).resolve()),
        "given": str(dataset),
        "minari_version": ds.minari_version,
        "data_format": metadata.get("data_format"),
        "episodes": int(ds.total_episodes),
        "steps": int(ds.total_steps),
        "env_id": info["env_id"],
        "env_kwargs": kwargs,
        **{key: metadata.get(key) for key in ("algorithm_name", "author", "code_permalink")},
    }
    jpeg = screens_jpeg(ds)
    preprocessing = {
        "source_observations": "RGB 210x160x3 screens"
        + (" (JPEG-compressed, lossy)" if jpeg else ""),
        "jpeg_compressed_screens": jpeg,
        "frame_skip": kwargs.get("frameskip"),
        "repeat_action_probability": kwargs.get("repeat_action_probability"),
        "max_pool_last_two_frames": False if info["plain_ale"] else None,
        "grayscale": True,
        "resize": "cv2.INTER_AREA to 84x84",
        "terminal": "termination (game over) or truncation (step cap) of the dataset's episode",
        "max_episode_steps": info["max_episode_steps"],
        "action_set": "minimal"
        + (" (mapped from the full set)" if info["full_action_space"] else ""),
        "reward": "clipped to [-1, 1]; raw rewards in /raw_rewards",
        "frame_stack": DQN_REPLAY_PREPROCESSING["frame_stack"],
    }
    preprocessing["differs_from_dqn_replay"] = _differences(preprocessing, info)
    return source, preprocessing


def _differences(preprocessing: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """What the store's data does differently from DQN-replay's, in words (None: unknown)."""
    found = []
    for key in ("frame_skip", "repeat_action_probability", "max_episode_steps"):
        value, reference = preprocessing[key], DQN_REPLAY_PREPROCESSING[key]
        if value is None:
            found.append(f"{key}: not recorded in the dataset (DQN-replay: {reference})")
        elif value != reference:
            found.append(f"{key}: {value} (DQN-replay: {reference})")
    if preprocessing["max_pool_last_two_frames"] is False:
        found.append(
            "no max-pool over the last two emulator frames: each frame is the screen "
            "of the last skipped frame (ALE's own frame skip)"
        )
    elif preprocessing["max_pool_last_two_frames"] is None:
        found.append(
            "max-pool over the last two emulator frames: unknown (the dataset's env "
            "is not plain ale_py AtariEnv)"
        )
    if preprocessing["jpeg_compressed_screens"]:
        found.append("screens JPEG-compressed (lossy) before the grayscale conversion")
    if info["full_action_space"]:
        found.append("recorded with the full 18-action set, mapped to the minimal set")
    found.append("raw rewards recorded beside the clipped ones (DQN-replay: clipped only)")
    return found
