"""``Contexts``: a batch of context windows as the model takes them, and where each came from.

One type flows from the store to every result: the store cuts it (``EpisodeStore.contexts``,
``EpisodeStore.sample_contexts``), a rollout's history makes one (``Contexts.from_history``),
the model runs it (``model(contexts)``, ``model.run_with_cache(contexts)``) and every analysis
and attribution function takes it. ``encoded(model)`` adds the state embeddings once, so
analyses that rerun the same frames (every grid RTG, every patch) never run the CNN twice.

Windows are right-aligned: a window that would start before its episode is padded on the left
with zero frames, action 0, RTG 0, timestep 0 and ``mask`` False (as training cuts them).
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Bool, Float, Int, UInt8

from atari_dt.errors import OutOfRangeError, UserError

if TYPE_CHECKING:
    from atari_dt.datasets.store import EpisodeStore


class ContextIndexError(OutOfRangeError):
    """An episode, step or window step that is not there (the message gives the range)."""


Index = int | np.integer | slice | Sequence[int] | np.ndarray | torch.Tensor


@dataclass(frozen=True, eq=False)
class Contexts:
    """``B`` context windows of ``T`` steps.

    Tensors (one device): ``frames`` uint8 ``[B, T, S, H, W]`` (each step's frame stack,
    oldest frame first), ``actions`` and ``timesteps`` int64 ``[B, T]``, ``rtg`` float32
    ``[B, T]`` (unscaled, in ``reward_units``), ``mask`` bool ``[B, T]`` (False on padding),
    ``state_embeddings`` float ``[B, T, d_model]`` or None (see ``encoded``).

    Provenance (numpy, None when unknown, e.g. for a live rollout): ``episodes``, ``steps``,
    ``rows`` int64 ``[B]`` (store episode, step in it and store row of each window's last
    step); ``ram`` uint8 ``[B, T, 128]`` (zeros on padding); ``objects`` name -> float32
    ``[B, 2]`` (x, y in frame pixels at the last step, NaN when off screen); ``behaviour``
    ``B`` labels of the policy that played each episode (e.g. ``component 2: epsilon 0.3 of
    expert_seaquest``); ``game`` and ``reward_units`` of the store.
    """

    frames: UInt8[torch.Tensor, "B T S H W"]
    actions: Int[torch.Tensor, "B T"]
    rtg: Float[torch.Tensor, "B T"]
    timesteps: Int[torch.Tensor, "B T"]
    mask: Bool[torch.Tensor, "B T"]
    state_embeddings: Float[torch.Tensor, "B T d"] | None = None
    episodes: np.ndarray | None = None
    steps: np.ndarray | None = None
    rows: np.ndarray | None = None
    ram: np.ndarray | None = None
    objects: dict[str, np.ndarray] | None = None
    behaviour: tuple[str | None, ...] | None = None
    game: str = ""
    reward_units: str = ""
    encoded_by: Any = dataclasses.field(default=None, repr=False)
    """A weak reference to the model whose encoder made ``state_embeddings`` (None: given by
    hand, trusted). Another model re-encodes the frames instead of using them."""

    def __post_init__(self) -> None:
        _check_shapes(self)

    # ---- what it holds --------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def length(self) -> int:
        """T, steps per window."""
        return int(self.frames.shape[1])

    @property
    def device(self) -> torch.device:
        return self.frames.device

    def step_index(self, step: int) -> int:
        """A window step (negative counts from the end) as an index in ``[0, T)``.

        Raises:
            IndexError: the step is outside the window (the message gives the range).
        """
        if not -self.length <= step < self.length:
            raise ContextIndexError(
                f"step {step} is outside the window of {self.length} steps "
                f"(-{self.length}..{self.length - 1})"
            )
        return step % self.length

    def inputs(self) -> tuple[torch.Tensor, ...]:
        """``(frames, actions, rtg, timesteps, mask)``: the model's tensor arguments."""
        return self.frames, self.actions, self.rtg, self.timesteps, self.mask

    # ---- new contexts from this one -------------------------------------------------------

    def with_rtg(self, rtg: torch.Tensor | float) -> Contexts:
        """The same windows asking for another RTG: a float (every step) or ``[B, T]``. The
        state embeddings are kept (they do not depend on the RTG)."""
        if not isinstance(rtg, torch.Tensor):
            rtg = torch.full_like(self.rtg, float(rtg))
        return dataclasses.replace(self, rtg=rtg.to(self.rtg.device, self.rtg.dtype))

    def with_frames(self, frames: torch.Tensor) -> Contexts:
        """The same windows with other frames (uint8, same shape); state embeddings dropped."""
        return dataclasses.replace(self, frames=frames, state_embeddings=None, encoded_by=None)

    def encoded(self, model: Any) -> Contexts:
        """These contexts with ``state_embeddings`` (``model.embed_states(frames)``, computed
        without gradients unless this model already made them)."""
        if self.state_embeddings is not None and self.encoded_for(model):
            return self
        with torch.no_grad():
            states = model.embed_states(self.frames.to(model.device))
        return dataclasses.replace(self, state_embeddings=states, encoded_by=weakref.ref(model))

    def encoded_for(self, model: Any) -> bool:
        """Whether ``state_embeddings`` may stand in for ``model``'s encoder: they exist and
        were made by this model (or given by hand). A model with new weights (a randomised
        copy, a later checkpoint) is another object, so it encodes the frames itself."""
        if self.state_embeddings is None:
            return False
        return self.encoded_by is None or self.encoded_by() is model

    def to(self, device: str | torch.device) -> Contexts:
        """The tensors moved to ``device`` (provenance stays on the host)."""
        names = ("frames", "actions", "rtg", "timesteps", "mask", "state_embeddings")
        moved = {n: getattr(self, n).to(device) for n in names if getattr(self, n) is not None}
        return dataclasses.replace(self, **moved)

    def repeat(self, n: int) -> Contexts:
        """A batch of one as ``n`` copies (expanded views: no copy of the frames), e.g. the
        unchanged inputs beside Captum's ``n`` integration points.

        Raises:
            ValueError: the batch is not of one.
        """
        if len(self) != 1:
            raise ValueError(f"repeat needs a batch of one context, got {len(self)}")
        tensors = {n_: getattr(self, n_) for n_ in _TENSORS if getattr(self, n_) is not None}
        expanded = {name: t.expand(n, *t.shape[1:]) for name, t in tensors.items()}
        host = {
            name: None if getattr(self, name) is None else np.repeat(getattr(self, name), n, 0)
            for name in _HOST
        }
        objects = (
            None
            if self.objects is None
            else {k: np.repeat(v, n, 0) for k, v in self.objects.items()}
        )
        behaviour = None if self.behaviour is None else self.behaviour * n
        return dataclasses.replace(self, **expanded, **host, objects=objects, behaviour=behaviour)

    def __getitem__(self, index: Index) -> Contexts:
        """The windows at ``index``: an int (a batch of one, the batch dim kept), a slice, an
        array of ints (negative ones count from the end) or a boolean mask ``[B]``.

        Raises:
            ContextIndexError: an index outside the batch; TypeError: a string (a field name)
                or another type; ValueError: a mask of another length.
        """
        rows = self._rows(index)
        picked = torch.as_tensor(rows) if not isinstance(rows, slice) else rows
        tensors = {n: _take(getattr(self, n), picked) for n in _TENSORS}
        host = {n: None if getattr(self, n) is None else getattr(self, n)[rows] for n in _HOST}
        objects = None if self.objects is None else {k: v[rows] for k, v in self.objects.items()}
        behaviour = None
        if self.behaviour is not None:
            behaviour = tuple(np.asarray(self.behaviour, dtype=object)[rows].tolist())
        return dataclasses.replace(self, **tensors, **host, objects=objects, behaviour=behaviour)

    def _rows(self, index: Index) -> slice | np.ndarray:
        """``index`` as a slice or an int64 array of rows in ``[0, B)``."""
        B = len(self)
        if isinstance(index, str):
            raise TypeError(
                f"Contexts are indexed by window (an int, slice or index array), not "
                f"{index!r}; read a field as an attribute: contexts.{index}"
            )
        if isinstance(index, slice):
            return index
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        rows = np.asarray(index)
        if rows.dtype == bool:
            if rows.shape != (B,):
                raise ValueError(f"a boolean mask over {B} windows must be [{B}], got {rows.shape}")
            return np.flatnonzero(rows)
        if rows.dtype.kind not in "iu":
            raise TypeError(f"Contexts index must be integers or a boolean mask, got {rows.dtype}")
        rows = rows.astype(np.int64).reshape(-1)  # an int (or 0-d array) keeps the batch dim
        bad = rows[(rows < -B) | (rows >= B)]
        if len(bad):
            raise ContextIndexError(
                f"window {int(bad[0])} is not in a batch of {B} (-{B}..{B - 1})"
            )
        return rows % max(B, 1)

    @classmethod
    def concat(cls, parts: Sequence[Contexts]) -> Contexts:
        """The windows of ``parts`` in order, as one batch (same T, game and units). A field
        known for only some parts becomes None; state embeddings are kept if all have them."""
        if not parts:
            raise ValueError("concat needs at least one Contexts")
        first = parts[0]
        for part in parts[1:]:
            if part.frames.shape[1:] != first.frames.shape[1:]:
                raise ValueError(
                    f"cannot concatenate windows of shape {tuple(part.frames.shape[1:])} with "
                    f"{tuple(first.frames.shape[1:])}"
                )
        values: dict[str, Any] = {}
        for name in _TENSORS:
            got = [getattr(p, name) for p in parts]
            values[name] = None if any(g is None for g in got) else torch.cat(got)
        encoders = {None if p.encoded_by is None else p.encoded_by() for p in parts}
        if len(encoders) != 1:  # embeddings of different models do not mix
            values["state_embeddings"] = None
        values["encoded_by"] = (
            parts[0].encoded_by if values["state_embeddings"] is not None else None
        )
        for name in _HOST:
            got = [getattr(p, name) for p in parts]
            values[name] = None if any(g is None for g in got) else np.concatenate(got)
        names = [set(p.objects or ()) for p in parts]
        common = set.intersection(*names) if all(p.objects for p in parts) else set()
        values["objects"] = (
            {k: np.concatenate([p.objects[k] for p in parts]) for k in sorted(common)}  # type: ignore[index]
            if common
            else None
        )
        behaviours = [p.behaviour for p in parts]
        values["behaviour"] = (
            None if any(b is None for b in behaviours) else sum(behaviours, ())  # type: ignore[arg-type]
        )
        games = {p.game for p in parts}
        units = {p.reward_units for p in parts}
        values["game"] = first.game if len(games) == 1 else ""
        values["reward_units"] = first.reward_units if len(units) == 1 else ""
        return cls(**values)

    # ---- made elsewhere -------------------------------------------------------------------

    @classmethod
    def from_history(
        cls,
        stacks: np.ndarray,
        actions: np.ndarray,
        rtg: np.ndarray,
        timesteps: np.ndarray,
        *,
        context_len: int,
        game: str = "",
        ram: np.ndarray | None = None,
        reward_units: str = "",
    ) -> Contexts:
        """The window of the last ``context_len`` steps of a live rollout's history (a batch
        of one, no padding): ``stacks`` uint8 ``[L, S, H, W]`` (each step's frame stack),
        ``actions``, ``rtg`` (the return still asked for at each step), ``timesteps`` ``[L]``,
        ``ram`` ``[L, 128]``. The current step's action may be anything (no logit sees it)."""
        steps = slice(max(0, len(stacks) - context_len), len(stacks))
        n = steps.stop - steps.start
        return cls(
            frames=torch.as_tensor(np.asarray(stacks[steps]), dtype=torch.uint8)[None],
            actions=torch.as_tensor(np.asarray(actions[steps]), dtype=torch.long)[None],
            rtg=torch.as_tensor(np.asarray(rtg[steps]), dtype=torch.float32)[None],
            timesteps=torch.as_tensor(np.asarray(timesteps[steps]), dtype=torch.long)[None],
            mask=torch.ones(1, n, dtype=torch.bool),
            ram=None if ram is None else np.asarray(ram[steps])[None],
            game=game,
            reward_units=reward_units,
        )


_TENSORS = ("frames", "actions", "rtg", "timesteps", "mask", "state_embeddings")
_HOST = ("episodes", "steps", "rows", "ram")


def _take(tensor: torch.Tensor | None, index: slice | torch.Tensor) -> torch.Tensor | None:
    if tensor is None:
        return None
    if isinstance(index, slice):
        return tensor[index]
    return tensor.index_select(0, index.to(tensor.device))


def _check_shapes(contexts: Contexts) -> None:
    """Every field agrees on ``[B, T]`` (a clear error, not a broadcast deep in the model)."""
    frames = contexts.frames
    if not isinstance(frames, torch.Tensor) or frames.ndim != 5:
        shape = getattr(frames, "shape", None)
        raise ValueError(f"Contexts.frames must be a [B, T, S, H, W] tensor, got shape {shape}")
    B, T = frames.shape[:2]
    for name in ("actions", "rtg", "timesteps", "mask"):
        value = getattr(contexts, name)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (B, T):
            raise ValueError(
                f"Contexts.{name} must be a [B, T] = [{B}, {T}] tensor like the frames, got "
                f"{getattr(value, 'shape', type(value).__name__)}"
            )
    states = contexts.state_embeddings
    if states is not None and tuple(states.shape[:2]) != (B, T):
        raise ValueError(f"Contexts.state_embeddings must be [{B}, {T}, d], got {states.shape}")
    for name in _HOST:
        value = getattr(contexts, name)
        if value is not None and len(value) != B:
            raise ValueError(f"Contexts.{name} has {len(value)} entries for {B} windows")
    if contexts.behaviour is not None and len(contexts.behaviour) != B:
        raise ValueError(f"Contexts.behaviour has {len(contexts.behaviour)} labels for {B}")


# ---- cutting windows from a store -------------------------------------------------------------


def read_contexts(
    store: EpisodeStore,
    episodes: Sequence[int] | np.ndarray,
    steps: Sequence[int] | np.ndarray,
    *,
    context_len: int,
    stack_size: int = 4,
) -> Contexts:
    """The windows ending at ``steps[i]`` of ``episodes[i]`` (store numbering), read from the
    store one window at a time (only their frames, actions, RTG, RAM and objects; never a
    whole column). Right-aligned with left padding, as training cuts them.

    Raises:
        IndexError: no such episode or step (the message gives the valid range).
    """
    from atari_dt.datasets.reading import read_span

    episodes = np.asarray(episodes, dtype=np.int64).reshape(-1)
    steps = np.asarray(steps, dtype=np.int64).reshape(-1)
    if len(episodes) != len(steps):
        raise UserError(f"{len(episodes)} episodes but {len(steps)} steps: give one step each")
    if len(episodes) == 0:
        raise UserError("no windows asked for: give at least one (episode, step)")
    rows = np.empty(len(episodes), dtype=np.int64)
    for i, (episode, step) in enumerate(zip(episodes, steps, strict=True)):
        rows[i] = _row(store, int(episode), int(step))
    T, S = context_len, stack_size
    h5 = store.h5
    rtg_key = "rtg" if store.reward_units == "clipped" else "raw_rtg"
    B, (H, W) = len(rows), store.frame_shape
    frames = np.zeros((B, T + S - 1, H, W), dtype=np.uint8)
    actions = np.zeros((B, T), dtype=np.int64)
    rtg = np.zeros((B, T), dtype=np.float32)
    timesteps = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=bool)
    ram = np.zeros((B, T, 128), dtype=np.uint8) if store.has_ram else None
    for i, (episode, row) in enumerate(zip(episodes, rows, strict=True)):
        start = int(store.offsets[episode])
        first = max(start, row - T + 1)  # first real step of the window
        n = row + 1 - first
        first_frame = max(start, row - T - S + 2)
        frames[i, T + S - 1 - (row + 1 - first_frame) :] = read_span(h5["frames"], first_frame,
                                                                     row + 1)  # fmt: skip
        actions[i, T - n :] = h5["actions"][first : row + 1]
        rtg[i, T - n :] = h5[rtg_key][first : row + 1]
        timesteps[i, T - n :] = np.arange(first - start, row + 1 - start)
        mask[i, T - n :] = True
        if ram is not None:
            ram[i, T - n :] = h5["ram"][first : row + 1]
    stacks = np.stack([frames[:, k : k + T] for k in range(S)], axis=2)  # (B, T, S, H, W)
    return Contexts(
        frames=torch.from_numpy(stacks),
        actions=torch.from_numpy(actions),
        rtg=torch.from_numpy(rtg),
        timesteps=torch.from_numpy(timesteps),
        mask=torch.from_numpy(mask),
        episodes=episodes,
        steps=steps,
        rows=rows,
        ram=ram,
        objects=_objects_at(store, rows),
        behaviour=tuple(behaviour_label(store.behaviours[int(e)]) for e in episodes),
        game=store.game,
        reward_units=store.reward_units,
    )


def _row(store: EpisodeStore, episode: int, step: int) -> int:
    if not 0 <= episode < len(store):
        raise ContextIndexError(f"episode {episode} is not in {store.path} (0..{len(store) - 1})")
    length = int(store.lengths[episode])
    if not 0 <= step < length:
        raise ContextIndexError(
            f"step {step} is not in episode {episode} of {store.path} (0..{length - 1})"
        )
    return int(store.offsets[episode]) + step


def _objects_at(store: EpisodeStore, rows: np.ndarray) -> dict[str, np.ndarray] | None:
    group = store.h5.get("objects")
    if group is None:
        return None
    unique, where = np.unique(rows, return_inverse=True)  # h5py wants increasing indices
    return {name: group[name][unique][where].astype(np.float32) for name in group}


def behaviour_label(spec: dict | None) -> str | None:
    """The policy that played an episode, e.g. ``component 2: epsilon 0.3 of expert_seaquest``."""
    if not spec:
        return None
    label = str(spec.get("name", "?"))
    if "epsilon" in spec:
        label += f" {spec['epsilon']:g}"
    base = spec.get("base")
    if isinstance(base, dict) and "name" in base:
        label += f" of {base['name']}"
    return f"component {spec['component']}: {label}" if "component" in spec else label
