"""Calibrate and check the RAM -> object-box maps of :mod:`atari_dt.envs.objects` on real frames.

For each game this plays real emulator frames (sticky actions 0.25, one action held for 4 frames
as an agent step does) with a simple scripted-plus-random policy (Qbert: ``QbertExpert`` with
epsilon 0.3), and records the full 210x160 screen (ALE palette indices and their RGB colours)
and the RAM after every emulator frame. Some
recordings edit the RAM to reach rare states (Seaquest's later levels, Breakout's short paddle).
Then:

1. Fit: each object is found in the RGB screen by its colour (and screen region), on frames
   where it is whole and unambiguous, and its centre (screen px) is fitted as ``a * ram + b`` by
   least squares, with the RAM of the same frame (lag 0) and, to check the alignment, of the
   frame before (-1) and after (+1). The constants in ``objects.py`` came from these fits.
2. Check: the boxes ``objects.screen_boxes`` predicts are compared with the object's coloured
   pixels near the box (centre error; "found" < "visible" counts frames predicted but not
   seen), and frames where the object is seen but not predicted are counted.
3. Frames: episodes under the DQN-replay preprocessing (``play_episode``) check the 84x84
   positions against the bright pixels of the ball and paddles (Pong, Breakout).
4. Figures (``--figures DIR``): labelled boxes on real 84x84 frames, ``DIR/<game>.png``.

Run: ``.venv/bin/python benchmarks/calibrate_objects.py [--frames 20000] [--figures docs/objects]``
(about 2 minutes for the four games on 2 cores at the default 12,000 frames per recording;
the largest arrays take ~0.5 GB per 12,000 frames).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.envs import objects
from atari_dt.envs.experts import QbertExpert
from atari_dt.envs.policies import StepInput

# --- recording -----------------------------------------------------------------------------


class ScriptedPolicy:
    """A RAM-reading policy that keeps the game going long enough to show every object, mixed
    with uniformly random actions (probability ``epsilon``). Implements the ``Policy`` protocol.
    """

    def __init__(self, game: str, epsilon: float = 0.3) -> None:
        self.game, self.epsilon = game, epsilon
        self._rng = np.random.default_rng(0)
        self._surfacing = False
        self._qbert = QbertExpert()

    def reset(self, rng: np.random.Generator) -> None:
        self._rng, self._surfacing = rng, False
        self._qbert.reset(rng)

    def spec(self) -> dict[str, Any]:
        return {"name": "calibration", "game": self.game, "epsilon": self.epsilon}

    def act(self, step: StepInput) -> int:
        names, ram = step.action_meanings, step.ram.astype(int)
        random_action = int(self._rng.integers(len(names)))
        if self.game == "Breakout":
            if self._rng.random() < self.epsilon:
                return random_action
            return names.index(self._breakout(ram))
        if self.game == "Seaquest":
            # Surface before the oxygen runs out (and stay until refilled), else random.
            if ram[102] < 20:
                self._surfacing = True
            if ram[102] >= 63 and ram[97] <= 13:
                self._surfacing = False
            return names.index("UPFIRE") if self._surfacing else random_action
        if self.game == "Qbert":
            # The expert covers the whole pyramid and lives long enough for Coily to hatch.
            expert = self._qbert.act(step)
            return random_action if self._rng.random() < self.epsilon else expert
        return random_action

    @staticmethod
    def _breakout(ram: np.ndarray) -> str:
        """Follow the ball with the paddle; serve when no ball is in play."""
        if ram[101] == 0:
            return "FIRE"
        paddle_centre, ball_centre = ram[72] - 39.5, ram[99] - 48.5
        if ball_centre > paddle_centre + 4:
            return "RIGHT"
        if ball_centre < paddle_centre - 4:
            return "LEFT"
        return "NOOP"


@dataclass
class Screens:
    """Every emulator frame of a recording: ``screen`` uint8 [N, 210, 160] ALE palette indices
    (a quarter of the RGB memory), ``palette`` {index: (r, g, b)} of the indices seen, and
    ``ram`` int64 [N, 128] read right after that frame was emulated."""

    screen: np.ndarray
    palette: dict[int, tuple[int, int, int]]
    ram: np.ndarray

    def colour_mask(self, colours: list[tuple[int, int, int]]) -> np.ndarray:
        """bool [N, 210, 160]: pixels of any of ``colours`` (RGB)."""
        wanted = [i for i, rgb in self.palette.items() if rgb in colours]
        return np.isin(self.screen, wanted)

    def not_colour_mask(self, colours: list[tuple[int, int, int]]) -> np.ndarray:
        """bool [N, 210, 160]: pixels of none of ``colours`` (RGB)."""
        return ~self.colour_mask(colours)


Poke = Callable[[Any, int, int], None]  # (ale, episode index, frame in episode) -> None


def raise_seaquest_difficulty(ale: Any, episode: int, frame: int) -> None:
    """Force Seaquest's levelDifficulty (RAM 61) to 2, 4, 6, 7 in turn per episode: the
    multi-copy enemy groups of later levels appear without having to play there."""
    wanted = (2, 4, 6, 7)[episode % 4]
    if ale.getRAM()[61] < wanted:
        ale.setRAM(61, wanted)


def open_breakout_wall(ale: Any, episode: int, frame: int) -> None:
    """Clear one column of Breakout bricks (RAM 6j..6j+5 hold column group j, one byte per
    row) early in each episode, so the ball reaches the top wall and the paddle shrinks."""
    if frame < 200:
        group = 1 + episode % 4
        for addr in range(6 * group, 6 * group + 6):
            ale.setRAM(addr, 0)


def record_screens(game: str, n_frames: int, seed: int, poke: Poke | None = None) -> Screens:
    """Play ``n_frames`` emulator frames of ``game`` (resetting at game over) with
    :class:`ScriptedPolicy`, recording the screen and RAM after each frame.

    Args:
        poke: called before every agent step to edit the RAM (reach rare game states).
    """
    import ale_py
    import gymnasium as gym

    from atari_dt.envs.games import env_id

    gym.register_envs(ale_py)
    env = gym.make(env_id(game), frameskip=1, repeat_action_probability=0.25)
    ale, meanings = env.unwrapped.ale, tuple(env.unwrapped.get_action_meanings())
    policy, rng = ScriptedPolicy(game), np.random.default_rng(seed)
    env.reset(seed=seed)
    policy.reset(rng)
    screen, ram, palette, action, episode, start = [], [], {}, 0, 0, 0
    for k in range(n_frames):
        if k % 4 == 0:  # an agent step: a new action every 4 frames
            if poke is not None:
                poke(ale, episode, k - start)
            action = policy.act(StepInput(None, ale.getRAM(), 0.0, k // 4, meanings))
        _, _, terminated, truncated, _ = env.step(action)
        screen.append(ale.getScreen())
        ram.append(ale.getRAM())
        colours_here = set(np.flatnonzero(np.bincount(screen[-1].ravel(), minlength=256)))
        if not colours_here <= set(palette):  # a colour not seen before: look up its RGB
            palette.update(screen_palette(screen[-1], ale.getScreenRGB()))
        if terminated or truncated:
            episode, start = episode + 1, k + 1
            env.reset(seed=seed + episode)
            policy.reset(rng)
    env.close()
    return Screens(np.stack(screen), palette, np.stack(ram).astype(np.int64))


def screen_palette(screen: np.ndarray, rgb: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """{palette index: (r, g, b)} of the pixels of one frame."""
    index, first = np.unique(screen.ravel(), return_index=True)
    colours = rgb.reshape(-1, 3)[first]
    return {int(i): tuple(int(v) for v in c) for i, c in zip(index, colours, strict=True)}


# --- finding objects by colour ------------------------------------------------------------

Box = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x0, x1, y0, y1: float [N]


def bbox(mask: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> Box:
    """Bounding box (screen px, inclusive) of the True pixels of ``mask`` [N, 210, 160] within
    ``rows`` x ``cols`` (inclusive ranges); NaN where there are none."""
    window = mask[:, rows[0] : rows[1] + 1, cols[0] : cols[1] + 1]
    any_row, any_col = window.any(axis=2), window.any(axis=1)
    found = any_row.any(axis=1)

    def first_last(a: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
        first = np.argmax(a, axis=1) + offset
        last = a.shape[1] - 1 - np.argmax(a[:, ::-1], axis=1) + offset
        return np.where(found, first, np.nan), np.where(found, last, np.nan)

    x0, x1 = first_last(any_col, cols[0])
    y0, y1 = first_last(any_row, rows[0])
    return x0, x1, y0, y1


def centre(box: Box) -> tuple[np.ndarray, np.ndarray]:
    x0, x1, y0, y1 = box
    return (x0 + x1) / 2, (y0 + y1) / 2


def size(box: Box) -> tuple[np.ndarray, np.ndarray]:
    x0, x1, y0, y1 = box
    return x1 - x0 + 1, y1 - y0 + 1


# --- fitting -------------------------------------------------------------------------------


@dataclass
class Fit:
    """``measured ~ a * feature + b`` over the frames where ``measured`` is finite."""

    name: str
    a: float
    b: float
    rms: float
    max_abs: float
    n: int
    lag_rms: dict[int, float] = field(default_factory=dict)

    def line(self) -> str:
        lags = "  ".join(f"lag{k:+d} rms {v:6.2f}" for k, v in sorted(self.lag_rms.items()))
        return (
            f"  {self.name:34s} a {self.a:7.3f}  b {self.b:8.2f}  rms {self.rms:5.2f}"
            f"  max {self.max_abs:5.2f}  n {self.n:6d}  |  {lags}"
        )


def least_squares(feature: np.ndarray, measured: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(a, b, residuals) of the fit over finite ``measured``."""
    ok = np.isfinite(measured)
    x, y = feature[ok].astype(np.float64), measured[ok]
    design = np.stack([x, np.ones_like(x)], axis=1)
    if np.ptp(x) == 0:  # a constant feature: only the offset is identifiable
        design = design[:, 1:]
        (b,), *_ = np.linalg.lstsq(design, y, rcond=None)
        return 0.0, float(b), y - b
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(a), float(b), y - (a * x + b)


def fit(name: str, feature: np.ndarray, measured: np.ndarray) -> Fit | None:
    """Fit at lag 0 and report the rms at lags -1 and +1 (RAM of the frame before / after);
    None if no frame has a measurement. A constant ``feature`` fits the mean (a = 0)."""
    inner = slice(1, len(measured) - 1)
    if not np.isfinite(measured[inner]).any():
        return None
    a, b, residual = least_squares(feature[inner], measured[inner])
    lag_rms = {}
    for lag in (-1, 1):
        shifted = feature[1 + lag : len(feature) - 1 + lag]
        lag_rms[lag] = float(np.sqrt(np.mean(least_squares(shifted, measured[inner])[2] ** 2)))
    return Fit(
        name,
        a,
        b,
        float(np.sqrt(np.mean(residual**2))),
        float(np.abs(residual).max()),
        int(np.isfinite(measured[inner]).sum()),
        lag_rms,
    )


def only(condition: np.ndarray, value: np.ndarray) -> np.ndarray:
    """``value`` where ``condition`` holds, NaN elsewhere."""
    return np.where(condition, value, np.nan)


# --- per-game fits -------------------------------------------------------------------------

PONG_COLOURS = {"player": (92, 186, 92), "enemy": (213, 130, 74), "ball": (236, 236, 236)}
PONG_ROWS = (34, 193)


def fit_pong(s: Screens) -> list[Fit]:
    fits = []
    for name, addr_y in (("player", 51), ("enemy", 50)):
        box = bbox(s.colour_mask([PONG_COLOURS[name]]), PONG_ROWS, (0, 159))
        whole = size(box)[1] == 16  # not cut by the borders
        cx, cy = centre(box)
        fits.append(fit(f"{name} centre x (constant)", s.ram[:, 46], only(whole, cx)))
        fits.append(fit(f"{name} centre y ~ ram[{addr_y}]", s.ram[:, addr_y], only(whole, cy)))
    box = bbox(s.colour_mask([PONG_COLOURS["ball"]]), PONG_ROWS, (0, 159))
    w, h = size(box)
    whole = (w == 2) & (h == 4)
    cx, cy = centre(box)
    fits.append(fit("ball centre x ~ ram[49]", s.ram[:, 49], only(whole, cx)))
    fits.append(fit("ball centre y ~ ram[54]", s.ram[:, 54], only(whole, cy)))
    return fits


BREAKOUT_RED = (200, 72, 72)


def fit_breakout(s: Screens) -> list[Fit]:
    red = s.colour_mask([BREAKOUT_RED])
    paddle = bbox(red, (189, 194), (8, 151))  # the side walls' bottom marks are excluded
    cx, _ = centre(paddle)
    width = size(paddle)[0]
    shrunk = s.ram[:, 108] == 6  # 8 normally, 6 once the ball has hit the top wall
    # The ball takes the colour of the brick row it is in: fit it below the bricks only.
    ball = bbox(red, (93, 188), (8, 151))
    w, h = size(ball)
    bx, by = centre(ball)
    clean = (w == 2) & (h == 4)
    return [
        fit("paddle (16 px) centre x ~ ram[72]", s.ram[:, 72], only((width == 16) & ~shrunk, cx)),
        fit("paddle (12 px) centre x ~ ram[72]", s.ram[:, 72], only((width == 12) & shrunk, cx)),
        fit("ball centre x ~ ram[99]", s.ram[:, 99], only(clean, bx)),
        fit("ball centre y ~ ram[101]", s.ram[:, 101], only(clean, by)),
    ]


QBERT_ORANGE = (181, 83, 40)  # Qbert (the discs take it in some rounds, on rows 138..139)
QBERT_PURPLE = (146, 70, 192)  # the purple ball and Coily


def qbert_purple_slot(s: Screens) -> tuple[np.ndarray, np.ndarray]:
    """(row 1..5 of the purple enemy, frames with exactly one purple kind in RAM 106 + r)."""
    purple = s.ram[:, 107:112] == objects._QBERT_PURPLE  # (N, 5)
    return 1 + np.argmax(purple, axis=1), purple.sum(axis=1) == 1


def fit_qbert(s: Screens) -> list[Fit]:
    """Qbert's centre on whole sprites (8 px wide, 18..20 rows: not cut by a cube or the
    screen); the purple enemy's x on its cube, and the rows its sprite spans on each row."""
    box = bbox(s.colour_mask([QBERT_ORANGE]), (0, 209), (0, 159))
    w, h = size(box)
    cx, cy = centre(box)
    whole = (w == 8) & (h >= 18) & (h <= 20) & (s.ram[:, 67] < objects._QBERT_WRAP)
    row, one = qbert_purple_slot(s)
    pbox = bbox(s.colour_mask([QBERT_PURPLE]), (30, 209), (0, 159))
    px, _ = centre(pbox)
    col = objects._qbert_enemy_cell(s.ram, objects._QBERT_PURPLE)[1]
    cube_x = objects._QBERT_CUBE_X_TABLE[row, col]
    seen = one & (size(pbox)[0] <= 8)  # the discs (wider, other rows) are left out
    fits = [
        fit("player centre x ~ ram[43]", s.ram[:, 43], only(whole, cx)),
        fit("player centre y ~ ram[67]", s.ram[:, 67], only(whole, cy)),
        fit("coily centre x ~ CUBE_X[r][c]", cube_x, only(seen, px)),
    ]
    for edge, extreme, name in ((pbox[2], np.nanmin, "top"), (pbox[3], np.nanmax, "bottom")):
        rows = np.arange(1, 6)
        per_row = np.array([extreme(only(seen & (row == r), edge)) for r in rows])
        a, b, residual = least_squares(rows, per_row)
        rms, worst = float(np.sqrt(np.mean(residual**2))), float(np.abs(residual).max())
        fits.append(Fit(f"coily cell {name} row ~ cube row r", a, b, rms, worst, 5))
    return fits


SEAQUEST_SEA = [(0, 28, 136), (0, 0, 0), (24, 59, 157)]  # water, HMOVE bar, surface band
SEAQUEST_YELLOW = (187, 187, 53)  # the player's sub and torpedo
SEAQUEST_BLUE = (66, 72, 200)  # divers and enemy torpedoes
SEAQUEST_WHITE = (214, 214, 214)  # oxygen


def seaquest_player_masks(s: Screens) -> tuple[np.ndarray, np.ndarray]:
    """(sub, torpedo) masks: the torpedo is 1 row tall, so its columns hold one yellow pixel in
    the water, while the sub's columns hold several (its thin ends: within 2 columns of those).
    """
    yellow = s.colour_mask([SEAQUEST_YELLOW])
    yellow[:, :46] = False  # the score and reserve subs
    per_column = yellow.sum(axis=1)
    thick = per_column > 1
    near_thick = thick.copy()
    for shift in (1, 2):
        near_thick[:, shift:] |= thick[:, :-shift]
        near_thick[:, :-shift] |= thick[:, shift:]
    sub = yellow & near_thick[:, None, :]
    torpedo = yellow & ~sub
    # Near the surface the waves hide rows 53..56 and leave thin slivers of the sub: look for
    # the torpedo only where the whole sub is below them (torpedo row >= 64).
    torpedo[:, :64] = False
    return sub, torpedo


def fit_seaquest_player(s: Screens) -> list[Fit]:
    sub, torpedo = seaquest_player_masks(s)
    box = bbox(sub, (46, 152), (8, 159))
    w, h = size(box)
    whole = (w == 16) & (h == 11) & (s.ram[:, 103] == 0)
    cx, cy = centre(box)
    tbox = bbox(torpedo, (46, 152), (8, 159))
    tw, _ = size(tbox)
    tx, ty = centre(tbox)
    return [
        fit("player centre x ~ ram[70]", s.ram[:, 70], only(whole, cx)),
        fit("player centre y ~ ram[97]", s.ram[:, 97], only(whole, cy)),
        fit("player_missile centre x ~ ram[103]", s.ram[:, 103], only(tw == 8, tx)),
        fit("player_missile row ~ ram[97]", s.ram[:, 97], only(tw == 8, ty)),
    ]


def lane_rows(lane: int) -> tuple[int, int]:
    top = objects._seaquest_lane_top(lane)
    return top - 1, top + 14


def fit_seaquest_lanes(s: Screens) -> list[Fit]:
    """Obstacles (single visible copy, so the copy index is known), divers, enemy torpedoes."""
    other = s.not_colour_mask([*SEAQUEST_SEA, SEAQUEST_YELLOW, SEAQUEST_BLUE])
    blue = s.colour_mask([SEAQUEST_BLUE])
    const = np.zeros(len(s.ram))  # for the offsets that depend on no RAM byte
    fits = []
    for lane in range(4):
        rows, top = lane_rows(lane), objects._seaquest_lane_top(lane)
        pos, pattern = s.ram[:, 30 + lane], s.ram[:, 36 + lane] & 7
        is_sub = (s.ram[:, 89 + lane] & 4) > 0
        box = bbox(other, rows, (8, 159))
        w, h = size(box)
        cx, cy = centre(box)
        single = np.isin(pattern, (1, 2, 4)) & (pos < 120) & (w == 8)
        left = pos + np.select([pattern == 1, pattern == 2], [32, 16], 0)
        fits.append(fit(f"enemy{lane} copy centre x ~ pos + 16j", left, only(single, cx)))
        shark = single & ~is_sub & (h == 7)
        fits.append(
            fit(f"shark{lane} centre y - lane top ~ ram[93]", s.ram[:, 93], only(shark, cy - top))
        )
        fits.append(fit(f"sub{lane} centre y - lane top", const, only(single & is_sub, cy - top)))
        ball_pos = s.ram[:, 71 + lane]
        bbox_ = bbox(blue, rows, (8, 159))
        bw, _ = size(bbox_)
        bx, by = centre(bbox_)
        diver = ~is_sub & (bw == 8) & (ball_pos < 150)
        missile = is_sub & (bw == 6) & (ball_pos < 150)
        fits.append(fit(f"diver{lane} centre x ~ ram[{71 + lane}]", ball_pos, only(diver, bx)))
        fits.append(fit(f"diver{lane} centre y - lane top", const, only(diver, by - top)))
        fits.append(fit(f"enemy_missile{lane} x ~ ram[{71 + lane}]", ball_pos, only(missile, bx)))
        fits.append(fit(f"enemy_missile{lane} y - lane top", const, only(missile, by - top)))
    return fits


def fit_seaquest(s: Screens) -> list[Fit]:
    oxygen = bbox(s.colour_mask([SEAQUEST_WHITE]), (170, 174), (0, 159))
    below_max = s.ram[:, 102] < 64
    return [
        *fit_seaquest_player(s),
        *fit_seaquest_lanes(s),
        fit("oxygen bar right end ~ ram[102]", s.ram[:, 102], only(below_max, oxygen[1])),
        fit("oxygen bar left end", np.zeros(len(s.ram)), oxygen[0]),
    ]


# --- checking objects.py against the screens ----------------------------------------------


@dataclass
class Check:
    """How well the predicted boxes of one object sit on its pixels."""

    name: str
    predicted: int  # frames where objects.py says the object is visible
    found: int  # ... and its colour was found within MARGIN px of the box
    errors: np.ndarray  # |centre error| (screen px, max over x and y) on those frames
    unpredicted: int = -1  # frames where it is seen but predicted absent (-1: not checked)

    def line(self) -> str:
        e = self.errors
        stats = (
            f"median {np.median(e):4.2f}  p95 {np.percentile(e, 95):5.2f}  max {e.max():5.2f}"
            if len(e)
            else "no frames"
        )
        extra = f"  seen-but-not-predicted {self.unpredicted}" if self.unpredicted >= 0 else ""
        return (
            f"  {self.name:22s} visible {self.predicted:6d}  found {self.found:6d}  "
            f"centre error {stats}{extra}"
        )


MARGIN = 3  # px around a predicted box searched for the object's pixels


def check_object(name: str, pred: objects.ScreenBoxes, mask: np.ndarray) -> Check:
    """Compare predicted boxes with the bounding box of ``mask`` pixels within MARGIN px of
    each box (clipped like the prediction)."""
    visible = np.flatnonzero(np.isfinite(pred.x0))
    errors = []
    for k in visible:
        x0, x1 = int(pred.x0[k]) - MARGIN, int(np.ceil(pred.x1[k])) + MARGIN
        y0, y1 = int(pred.y0[k]) - MARGIN, int(np.ceil(pred.y1[k])) + MARGIN
        x0, y0 = max(x0, 0), max(y0, 0)
        ys, xs = np.nonzero(mask[k, y0 : y1 + 1, x0 : x1 + 1])
        if len(xs) == 0:
            continue
        found_x = (xs.min() + xs.max()) / 2 + x0
        found_y = (ys.min() + ys.max()) / 2 + y0
        err = max(
            abs(found_x - (pred.x0[k] + pred.x1[k]) / 2),
            abs(found_y - (pred.y0[k] + pred.y1[k]) / 2),
        )
        errors.append(err)
    return Check(name, len(visible), len(errors), np.array(errors))


def unpredicted(pred: objects.ScreenBoxes, seen: np.ndarray) -> int:
    """Frames where the object is seen (``seen`` bool [N]) but predicted absent."""
    return int((seen & ~np.isfinite(pred.x0)).sum())


def check_pong(s: Screens) -> list[Check]:
    boxes = objects.screen_boxes("Pong", s.ram)
    out = []
    for name, colour in PONG_COLOURS.items():
        mask = s.colour_mask([colour])
        mask[:, : PONG_ROWS[0]] = mask[:, PONG_ROWS[1] + 1 :] = False  # score, borders
        c = check_object(name, boxes[name], mask)
        c.unpredicted = unpredicted(boxes[name], mask.any(axis=(1, 2)))
        out.append(c)
    return out


def check_breakout(s: Screens) -> list[Check]:
    boxes = objects.screen_boxes("Breakout", s.ram)
    red = s.colour_mask([BREAKOUT_RED])
    paddle = red.copy()
    paddle[:, :189] = False
    paddle[:, :, :8] = paddle[:, :, 152:] = False
    ball = red.copy()
    ball[:, :93] = False  # the ball is red only below the bricks: check it there
    ball[:, 189:] = False
    in_sight = np.isfinite(boxes["ball"].y0) & (boxes["ball"].y0 >= 93)
    below_bricks = objects.ScreenBoxes(*(only(in_sight, v) for v in boxes["ball"]))
    c_ball = check_object("ball (below bricks)", below_bricks, ball)
    c_ball.unpredicted = unpredicted(boxes["ball"], ball.any(axis=(1, 2)))
    c_paddle = check_object("player", boxes["player"], paddle)
    c_paddle.unpredicted = unpredicted(boxes["player"], paddle.any(axis=(1, 2)))
    return [c_paddle, c_ball]


def check_qbert(s: Screens) -> list[Check]:
    boxes = objects.screen_boxes("Qbert", s.ram)
    orange = s.colour_mask([QBERT_ORANGE])
    orange[:, 138:140] = False  # discs in some rounds
    purple = s.colour_mask([QBERT_PURPLE])
    purple[:, :30] = False
    out = [
        check_object("player", boxes["player"], orange),
        check_object("coily", boxes["coily"], purple),
    ]
    out[0].unpredicted = unpredicted(boxes["player"], orange.any(axis=(1, 2)))
    out[1].unpredicted = unpredicted(boxes["coily"], purple.any(axis=(1, 2)))
    return out


def check_seaquest(s: Screens) -> list[Check]:
    boxes = objects.screen_boxes("Seaquest", s.ram)
    exploding = s.ram[:, 105] > 0
    sub, torpedo = seaquest_player_masks(s)
    other = s.not_colour_mask([*SEAQUEST_SEA, SEAQUEST_YELLOW, SEAQUEST_BLUE])
    other[:, :, :8] = False
    blue = s.colour_mask([SEAQUEST_BLUE])
    blue[:, 153:] = False  # the Activision logo
    white = s.colour_mask([SEAQUEST_WHITE])
    white[:, :170] = white[:, 175:] = False
    deep = boxes["player_missile"].y0 >= 64  # where the torpedo mask looks for it
    torpedo_deep = objects.ScreenBoxes(*(only(deep, v) for v in boxes["player_missile"]))
    out = [
        check_object("player", boxes["player"], sub),
        check_object("player_missile (deep)", torpedo_deep, torpedo),
        check_object("oxygen", boxes["oxygen"], white),
    ]
    out[0].unpredicted = unpredicted(boxes["player"], sub.any(axis=(1, 2)))
    out[1].unpredicted = unpredicted(boxes["player_missile"], torpedo.any(axis=(1, 2)))
    for lane in range(4):
        rows = lane_rows(lane)
        lane_other = np.zeros_like(other)
        lane_other[:, rows[0] : rows[1] + 1] = other[:, rows[0] : rows[1] + 1]
        lane_blue = np.zeros_like(blue)
        lane_blue[:, rows[0] : rows[1] + 1] = blue[:, rows[0] : rows[1] + 1]
        for copy in range(3):
            name = f"enemy{lane}_{copy}"
            out.append(check_object(name, boxes[name], lane_other))
        out.append(
            lane_leftovers(f"enemy{lane}_* (any)", boxes, lane, lane_other, "enemy", exploding)
        )
        for kind in ("diver", "enemy_missile"):
            name = f"{kind}{lane}"
            c = check_object(name, boxes[name], lane_blue)
            out.append(c)
        out.append(
            lane_leftovers(f"diver/missile{lane}", boxes, lane, lane_blue, "ball", exploding)
        )
    return out


def lane_leftovers(
    name: str, boxes: dict, lane: int, mask: np.ndarray, kind: str, exploding: np.ndarray
) -> Check:
    """Frames with pixels of a lane's obstacles (or divers/torpedoes) that no predicted box
    (grown by MARGIN) covers: objects on screen that objects.py misses. Frames where the
    player's sub explodes (``exploding``, its debris has other colours) are left out."""
    if kind == "enemy":
        lane_boxes = [boxes[f"enemy{lane}_{c}"] for c in range(3)]
    else:
        lane_boxes = [boxes[f"diver{lane}"], boxes[f"enemy_missile{lane}"]]
    covered = np.zeros_like(mask)
    cols, rows = np.arange(mask.shape[2]), np.arange(mask.shape[1])
    for b in lane_boxes:
        ok = np.isfinite(b.x0)
        in_x = (cols >= (b.x0 - MARGIN)[:, None]) & (cols <= (b.x1 + MARGIN)[:, None])
        in_y = (rows >= (b.y0 - MARGIN)[:, None]) & (rows <= (b.y1 + MARGIN)[:, None])
        covered |= ok[:, None, None] & in_y[:, :, None] & in_x[:, None, :]
    missed = (mask & ~covered).any(axis=(1, 2)) & ~exploding
    return Check(name, 0, 0, np.array([]), int(missed.sum()))


# --- 84x84 frames --------------------------------------------------------------------------


def record_frames(game: str, n_steps: int, seed: int) -> Any:
    """DQN-replay episodes (84x84 frames + RAM per agent step) of the scripted policy, at least
    ``n_steps`` agent steps in all, as one concatenated RecordedEpisode-like tuple."""
    from atari_dt.envs.dqn_replay import make_dqn_replay_env
    from atari_dt.envs.play import play_episode

    env = make_dqn_replay_env(game)
    frames, rams, i = [], [], 0
    while sum(len(f) for f in frames) < n_steps:
        episode = play_episode(env, ScriptedPolicy(game), seed=seed + i, max_steps=n_steps)
        frames.append(episode.frames)
        rams.append(episode.ram)
        i += 1
    env.close()
    return np.concatenate(frames), np.concatenate(rams)


def weighted_centroid(
    frames: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], background: float
) -> np.ndarray:
    """float [L, 2] (x, y): centroid of ``frame - background`` (clipped at 0) within the
    window (inclusive 84x84 index ranges); NaN where the window holds nothing brighter."""
    window = frames[:, rows[0] : rows[1] + 1, cols[0] : cols[1] + 1].astype(np.float64)
    weight = np.clip(window - background, 0, None)
    total = weight.sum(axis=(1, 2))
    ys, xs = np.mgrid[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (weight * xs).sum(axis=(1, 2)) / total
        y = (weight * ys).sum(axis=(1, 2)) / total
    found = total > 30  # a few grey levels of one pixel: noise-free frames, so any real object
    return np.stack([np.where(found, x, np.nan), np.where(found, y, np.nan)], axis=1)


FRAME_WINDOWS = {
    # game -> object -> (rows, cols, background grey, axes compared)
    "Pong": {
        # rows 14..76 lie inside the white borders; the ball between the paddles' columns
        "ball": ((14, 76), (12, 71), 87.0, (0, 1)),
        "player": ((14, 76), (72, 76), 87.0, (1,)),
        "enemy": ((14, 76), (7, 11), 87.0, (1,)),
    },
    "Breakout": {
        "ball": ((38, 74), (5, 78), 0.0, (0, 1)),  # below the bricks, above the paddle
        "player": ((75, 77), (5, 78), 0.0, (0,)),
    },
}


def frame_errors(game: str, frames: np.ndarray, ram: np.ndarray) -> dict[str, np.ndarray]:
    """|position - bright-pixel centroid| (84x84 px, max over the compared axes) for the steps
    where both exist and the predicted position is inside the window."""
    positions = objects.object_positions(game, ram)
    out = {}
    for name, (rows, cols, background, axes) in FRAME_WINDOWS[game].items():
        found = weighted_centroid(frames, rows, cols, background)
        pos = positions[name].astype(np.float64)
        inside = (pos[:, 1] >= rows[0]) & (pos[:, 1] <= rows[1])
        inside &= (pos[:, 0] >= cols[0]) & (pos[:, 0] <= cols[1])
        both = inside & np.isfinite(found[:, 0]) & np.isfinite(pos[:, 0])
        out[name] = np.abs(pos[both][:, axes] - found[both][:, axes]).max(axis=1)
    return out


# --- figures -------------------------------------------------------------------------------


def pick_steps(game: str, ram: np.ndarray, n: int) -> list[int]:
    """``n`` steps spread over the recording, preferring those with many visible objects."""
    positions = objects.object_positions(game, ram)
    visible = sum(np.isfinite(p[:, 0]).astype(int) for p in positions.values())
    chunks = np.array_split(np.arange(len(ram)), n)
    return [int(c[np.argmax(visible[c])]) for c in chunks]


def draw_figure(game: str, frames: np.ndarray, ram: np.ndarray, path: Path) -> None:
    """Labelled boxes on 4 real 84x84 frames, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = pick_steps(game, ram, 4)
    boxes = objects.object_boxes(game, ram)
    colours = plt.get_cmap("tab20")
    fig, axes = plt.subplots(2, 2, figsize=(12, 12.6))
    for ax, step in zip(axes.ravel(), steps, strict=True):
        ax.imshow(frames[step], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        for i, (name, b) in enumerate(boxes.items()):
            left, top, right, bottom = b[step]
            if not np.isfinite(left):
                continue
            colour = colours(i % 20)
            ax.add_patch(
                plt.Rectangle(
                    (left, top), right - left, bottom - top, fill=False, color=colour, lw=1.2
                )
            )
            ax.text(left, top - 0.4, name, color=colour, fontsize=8, va="bottom")
        ax.set_title(f"{game} step {step}")
        ax.set_xlim(-0.5, 83.5)
        ax.set_ylim(83.5, -0.5)
    fig.suptitle(
        f"{game}: object boxes from RAM (atari_dt.envs.objects) on DQN-replay 84x84 frames\n"
        "(each frame is the max of two emulator frames; the boxes are the newer one)"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))  # leave room for the two-line title
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------

GAMES: dict[str, tuple[Callable[[Screens], list[Fit]], Callable[[Screens], list[Check]]]] = {
    "Pong": (fit_pong, check_pong),
    "Breakout": (fit_breakout, check_breakout),
    "Seaquest": (fit_seaquest, check_seaquest),
    "Qbert": (fit_qbert, check_qbert),
}


RARE_STATES: dict[str, tuple[Poke, ...]] = {
    "Seaquest": (raise_seaquest_difficulty,),
    "Breakout": (open_breakout_wall,),
}


def run_game(game: str, n_frames: int, figures: Path | None) -> None:
    fit_game, check_game = GAMES[game]
    recordings: list[Poke | None] = [None, *RARE_STATES.get(game, ())]
    for seed, poke in enumerate(recordings, start=1):
        s = record_screens(game, n_frames, seed, poke)
        label = poke.__name__ if poke else "plain play"
        print(f"\n== {game}, {label}, seed {seed} ({len(s.ram)} emulator frames)")
        print(" fits (screen px):")
        for f in fit_game(s):
            if f is not None:
                print(f.line())
        print(" objects.py vs screen pixels (screen px):")
        for c in check_game(s):
            print(c.line())
        del s  # the screens take ~34 kB a frame
    frames, ram = record_frames(game, max(n_frames // 8, 500), seed=100)
    if game in FRAME_WINDOWS:
        print(f" 84x84 frames ({len(ram)} agent steps), |position - bright-pixel centroid|:")
        for name, err in frame_errors(game, frames, ram).items():
            print(
                f"  {name:8s} n {len(err):5d}  median {np.median(err):4.2f}  "
                f"p95 {np.percentile(err, 95):4.2f}  within 2 px {np.mean(err <= 2):.3f}"
            )
    if figures is not None:
        draw_figure(game, frames, ram, figures / f"{game.lower()}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--games", nargs="+", default=list(GAMES), choices=list(GAMES))
    parser.add_argument("--frames", type=int, default=12_000, help="emulator frames per recording")
    parser.add_argument("--figures", type=Path, default=None, help="write DIR/<game>.png")
    args = parser.parse_args()
    for game in args.games:
        run_game(game, args.frames, args.figures)


if __name__ == "__main__":
    main()
