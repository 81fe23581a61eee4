"""Game-object labels from Atari RAM: where the player, ball, enemies, ... are in the 84x84 frame.

Coordinates. ``(x, y)`` is the (column, row) of an object's centre in *pixel-index* coordinates:
pixel ``frame[r, c]`` has its centre at ``(c, r)``. The ALE screen is 210 rows x 160 columns; the
DQN-replay frame is ``cv2.resize(screen, (84, 84), interpolation=cv2.INTER_AREA)``, whose output
pixel ``j`` averages the input interval ``[j * 160/84, (j + 1) * 160/84)`` (columns; rows alike
with 210), where input pixel ``i`` covers ``[i, i + 1)``. A screen index ``x160`` is therefore the
continuous point ``x160 + 0.5``, i.e. ``(x160 + 0.5) * 84/160`` on the output axis, i.e. index
``x84 = (x160 + 0.5) * 84/160 - 0.5`` (and ``y84 = (y210 + 0.5) * 84/210 - 0.5``). The map is
affine, so box centres and edges map exactly.

Timing. ``play_episode`` reads the RAM right after the step whose last emulator frame is the
newest of the two max-pooled screens. That RAM describes what that newest screen shows: fitted
with the RAM of the same emulator frame every coordinate below has rms <= 0.5 screen px, with
the RAM of the frame before or after, 0.8-17 px for the ones that move. The 84x84 frame also
holds the previous emulator frame, so a moving object shows a second time, one frame's motion
behind, and the centroid of its bright pixels trails the label by half that motion: on 84x84
frames the balls are within 2 px of their label on 100% of steps (median 0.3 px), Breakout's
paddle 99%, Pong's randomly driven paddle (up to ~10 screen px per move) 84%.

Geometry. Every object is a box of screen pixels placed by an affine function of RAM bytes,
clipped to the part of the screen where the game can draw it; the label is the centre of the
visible part, NaN when nothing of it is visible (or the game says it is absent). The constants
were fitted by least squares on real frames (``benchmarks/calibrate_objects.py``); their
residuals are in the comments (in screen px; 1 screen px = 0.53 (x) / 0.40 (y) px at 84x84).
RAM addresses follow AtariARI and, for Seaquest, Dennis Debro's annotated disassembly. Qbert
draws each frame from the RAM of the frame before (its only exception to the timing above):
see its section.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

SCREEN_HEIGHT, SCREEN_WIDTH = 210, 160
FRAME_SIZE = 84

OBJECT_GAMES: tuple[str, ...] = ("Breakout", "Pong", "Qbert", "Seaquest")


class ScreenBoxes(NamedTuple):
    """Boxes of one object over L steps in screen pixel indices (inclusive), float64 ``[L]``
    each; NaN rows are absent objects."""

    x0: np.ndarray
    x1: np.ndarray
    y0: np.ndarray
    y1: np.ndarray


# --- helpers -------------------------------------------------------------------------------


def _box(
    x_centre: np.ndarray | float,
    y_centre: np.ndarray | float,
    width: np.ndarray | float,
    height: np.ndarray | float,
    present: np.ndarray,
    region: tuple[int, int, int, int],
) -> ScreenBoxes:
    """A ``width`` x ``height`` box (screen px; scalars or ``[L]``) around a centre, clipped to
    ``region = (col0, col1, row0, row1)`` (inclusive) and NaN where ``present`` is False or
    nothing of it is left inside the region."""
    n = present.shape[0]
    xc = np.broadcast_to(np.asarray(x_centre, dtype=np.float64), (n,))
    yc = np.broadcast_to(np.asarray(y_centre, dtype=np.float64), (n,))
    col0, col1, row0, row1 = region
    # A box of w pixels centred on c spans indices c - (w-1)/2 .. c + (w-1)/2.
    x0 = np.maximum(xc - (width - 1) / 2, col0)
    x1 = np.minimum(xc + (width - 1) / 2, col1)
    y0 = np.maximum(yc - (height - 1) / 2, row0)
    y1 = np.minimum(yc + (height - 1) / 2, row1)
    keep = present & (x0 <= x1) & (y0 <= y1)
    nan = np.float64(np.nan)
    return ScreenBoxes(*(np.where(keep, v, nan) for v in (x0, x1, y0, y1)))


def _hide_rows(box: ScreenBoxes, first: int, last: int) -> ScreenBoxes:
    """``box`` without screen rows ``first..last``, where the game never draws the object: the
    visible part is the box's rows above and below them (NaN if none are left)."""
    y0 = np.where((box.y0 >= first) & (box.y0 <= last), last + 1, box.y0)
    y1 = np.where((box.y1 >= first) & (box.y1 <= last), first - 1, box.y1)
    keep = y0 <= y1  # False also for NaN rows
    nan = np.float64(np.nan)
    return ScreenBoxes(*(np.where(keep, v, nan) for v in (box.x0, box.x1, y0, y1)))


def _all(n: int) -> np.ndarray:
    return np.ones(n, dtype=bool)


# --- Pong ----------------------------------------------------------------------------------
# Playfield between the white borders: rows 34..193 (paddles and ball are hidden outside).
_PONG_REGION = (0, 159, 34, 193)
# Paddles are 4 x 16 px at fixed columns (RAM 45/46 never change); the right paddle's top is
# ram[51] - 13 or - 14 (2-line kernel: ram parity), so its centre fit has 0.5 px max residual.
_PONG_PLAYER_X, _PONG_PLAYER_Y = 141.5, (1.0, -6.0)  # centre y = ram[51] - 6.0
_PONG_ENEMY_X, _PONG_ENEMY_Y = 17.5, (1.0, -7.5)  # centre y = ram[50] - 7.5, exact
# Ball 2 x 4 px: x exact; its top row is ram[54] - 14 or - 15 (2-line kernel timing), so the
# fitted offset is -12.4 .. -12.6 depending on the data: -12.5 has rms 0.4 px, max 1 px.
_PONG_BALL_X, _PONG_BALL_Y = (1.0, -48.5), (1.0, -12.5)


def _pong(ram: np.ndarray) -> dict[str, ScreenBoxes]:
    n = ram.shape[0]

    def affine(coef: tuple[float, float], addr: int) -> np.ndarray:
        return coef[0] * ram[:, addr] + coef[1]

    return {
        "player": _box(_PONG_PLAYER_X, affine(_PONG_PLAYER_Y, 51), 4, 16, _all(n), _PONG_REGION),
        "enemy": _box(_PONG_ENEMY_X, affine(_PONG_ENEMY_Y, 50), 4, 16, _all(n), _PONG_REGION),
        "ball": _box(
            affine(_PONG_BALL_X, 49), affine(_PONG_BALL_Y, 54), 2, 4, _all(n), _PONG_REGION
        ),
    }


# --- Breakout ------------------------------------------------------------------------------
# Inside the walls: columns 8..151, rows 32..195 (the side walls cover the paddle's ends).
_BREAKOUT_REGION = (8, 151, 32, 195)
# Paddle on rows 189..192, 16 px wide, 12 px once the ball has hit the top wall (ram[108] is
# 8, then 6): its left column is ram[72] - 47, so the centre is ram[72] - 39.5 / - 41.5, exact.
_BREAKOUT_PADDLE_LEFT, _BREAKOUT_PADDLE_Y = (1.0, -47.0), 190.5
# Ball 2 x 4 px: centre = (ram[99] - 48.5, ram[101] + 10.5), exact (17,564 frames); ram[101]
# is 0 while no ball is in play, which puts it above the playfield (clipped away).
_BREAKOUT_BALL_X, _BREAKOUT_BALL_Y = (1.0, -48.5), (1.0, 10.5)


def _breakout(ram: np.ndarray) -> dict[str, ScreenBoxes]:
    n = ram.shape[0]
    paddle_width = np.where(ram[:, 108] == 6, 12, 16)
    paddle_left = _BREAKOUT_PADDLE_LEFT[0] * ram[:, 72] + _BREAKOUT_PADDLE_LEFT[1]
    paddle_x = paddle_left + (paddle_width - 1) / 2
    ball_x = _BREAKOUT_BALL_X[0] * ram[:, 99] + _BREAKOUT_BALL_X[1]
    ball_y = _BREAKOUT_BALL_Y[0] * ram[:, 101] + _BREAKOUT_BALL_Y[1]
    return {
        "player": _box(paddle_x, _BREAKOUT_PADDLE_Y, paddle_width, 4, _all(n), _BREAKOUT_REGION),
        "ball": _box(ball_x, ball_y, 2, 4, ram[:, 101] > 0, _BREAKOUT_REGION),
    }


# --- Seaquest ------------------------------------------------------------------------------
# RAM (Debro's disassembly, index = address - 0x80): obstacleHorizPos 30..33, obstaclePattern
# 36..39 (low 3 bits: which of up to 3 copies, 16 px apart, are alive; bit 2 = leftmost),
# seaquestSubHorizPos 70, diverOrEnemyTorpedoHorizPos 71..74 (0 = none), obstacleAttributes
# 89..92 (bit 2: enemy sub, else shark), killerSharkFloatingValue 93, seaquestSubVertPos 97,
# oxygenValue 102, torpedoHorizPos 103 (0 = none). Index 0 of each array is the bottom lane.
_SEAQUEST_WATER = (8, 159, 46, 152)  # columns 0..7 are the HMOVE black bar
_SEAQUEST_LANES = 4
_SEAQUEST_COPIES = 3
_SEAQUEST_LANE_TOP, _SEAQUEST_LANE_PITCH = 137, -24  # lane 0 (bottom) rows start at 137
# Player sub 16 x 11 px: centre = (ram[70] + 7.5, ram[97] + 38), exact. It is absent between
# lives (ram[97] = 0) and while it explodes (seaquestSubDeathAnimIdx ram[105] > 0: debris in
# other colours, then nothing). Rows 53..56 (below the waves) never show the sub or torpedo.
_SEAQUEST_PLAYER_X, _SEAQUEST_PLAYER_Y = (1.0, 7.5), (1.0, 38.0)
# Player torpedo 8 x 1 px: (ram[103] + 3.5, ram[97] + 40), exact.
_SEAQUEST_TORPEDO_X, _SEAQUEST_TORPEDO_Y = (1.0, 3.5), (1.0, 40.0)
# Obstacle copy j: columns (ram[30+l] + 16 j) mod 256 .. +7, exact. Sharks are 7 rows tall and
# float: centre row = lane top + 3 + ram[93], exact for 7-row animation frames (others differ
# by <= 1 px). Enemy subs 10-11 rows: centre = lane top + 8 (fit 7.83, rms 0.25 px).
_SEAQUEST_OBSTACLE_DX = 3.5
_SEAQUEST_SHARK_DY, _SEAQUEST_SUB_DY = 3.0, 8.0
# Divers 8 px wide: x = ram[71+l] + 3.5, exact; 11-14 rows (animation): centre = lane top
# + 6.5, rms 0.45 px.
# Enemy torpedoes: two 4-px dashes on lane rows +8 and +11, box 6 x 4 px centred on
# (ram[71+l] + 4.5, lane top + 9.5), exact.
_SEAQUEST_DIVER_DX, _SEAQUEST_DIVER_DY = 3.5, 6.5
_SEAQUEST_MISSILE_DX, _SEAQUEST_MISSILE_DY = 4.5, 9.5
# Oxygen bar: white part spans columns 49 .. 48 + ram[102] (max 111) on rows 170..174, exact.
_SEAQUEST_OXYGEN_X0, _SEAQUEST_OXYGEN_ROWS = 49, (170, 174)
_SEAQUEST_HIDDEN_ROWS = (53, 56)
# Copies kept by the kernel when the group's position is >= 128 (part of it off screen),
# indexed by (position - 128) // 16 (ObstacleNUSIZIndexMaskingValues).
_SEAQUEST_EDGE_MASK = np.array([6, 4, 0, 0, 0, 0, 1, 3], dtype=np.int64)


def _seaquest_lane_top(lane: int) -> int:
    return _SEAQUEST_LANE_TOP + _SEAQUEST_LANE_PITCH * lane


def _seaquest_obstacles(ram: np.ndarray) -> dict[str, ScreenBoxes]:
    out = {}
    for lane in range(_SEAQUEST_LANES):
        pos = ram[:, 30 + lane]
        mask = np.where(pos < 128, 7, _SEAQUEST_EDGE_MASK[np.clip(pos - 128, 0, 127) // 16])
        alive = ram[:, 36 + lane] & 7 & mask
        is_sub = (ram[:, 89 + lane] & 4) > 0
        top = _seaquest_lane_top(lane)
        y = np.where(is_sub, top + _SEAQUEST_SUB_DY, top + _SEAQUEST_SHARK_DY + ram[:, 93])
        height = np.where(is_sub, 11, 7)
        for copy in range(_SEAQUEST_COPIES):
            x = (pos + 16 * copy) % 256 + _SEAQUEST_OBSTACLE_DX
            present = (alive >> (2 - copy)) & 1 > 0
            out[f"enemy{lane}_{copy}"] = _box(x, y, 8, height, present, _SEAQUEST_WATER)
    return out


def _seaquest_lane_balls(ram: np.ndarray) -> dict[str, ScreenBoxes]:
    out = {}
    for lane in range(_SEAQUEST_LANES):
        pos = ram[:, 71 + lane]
        is_sub = (ram[:, 89 + lane] & 4) > 0
        top = _seaquest_lane_top(lane)
        out[f"diver{lane}"] = _box(
            pos + _SEAQUEST_DIVER_DX,
            top + _SEAQUEST_DIVER_DY,
            8,
            13,
            (pos > 0) & ~is_sub,
            _SEAQUEST_WATER,
        )
        out[f"enemy_missile{lane}"] = _box(
            pos + _SEAQUEST_MISSILE_DX,
            top + _SEAQUEST_MISSILE_DY,
            6,
            4,
            (pos > 0) & is_sub,
            _SEAQUEST_WATER,
        )
    return out


def _seaquest_player(ram: np.ndarray) -> dict[str, ScreenBoxes]:
    alive = (ram[:, 97] > 0) & (ram[:, 105] == 0)
    sub_y = _SEAQUEST_PLAYER_Y[0] * ram[:, 97] + _SEAQUEST_PLAYER_Y[1]
    sub_x = _SEAQUEST_PLAYER_X[0] * ram[:, 70] + _SEAQUEST_PLAYER_X[1]
    torpedo_x = _SEAQUEST_TORPEDO_X[0] * ram[:, 103] + _SEAQUEST_TORPEDO_X[1]
    torpedo_y = _SEAQUEST_TORPEDO_Y[0] * ram[:, 97] + _SEAQUEST_TORPEDO_Y[1]
    player = _box(sub_x, sub_y, 16, 11, alive, _SEAQUEST_WATER)
    torpedo = _box(torpedo_x, torpedo_y, 8, 1, alive & (ram[:, 103] > 0), _SEAQUEST_WATER)
    return {
        "player": _hide_rows(player, *_SEAQUEST_HIDDEN_ROWS),
        "player_missile": _hide_rows(torpedo, *_SEAQUEST_HIDDEN_ROWS),
    }


def _seaquest_oxygen(ram: np.ndarray) -> ScreenBoxes:
    oxygen = np.minimum(ram[:, 102], 63)  # 64 (full) draws like 63
    row0, row1 = _SEAQUEST_OXYGEN_ROWS
    return _box(
        _SEAQUEST_OXYGEN_X0 + (oxygen - 1) / 2,
        (row0 + row1) / 2,
        oxygen,
        row1 - row0 + 1,
        oxygen > 0,
        (0, SCREEN_WIDTH - 1, 0, SCREEN_HEIGHT - 1),
    )


def _seaquest(ram: np.ndarray) -> dict[str, ScreenBoxes]:
    return {
        **_seaquest_player(ram),
        **_seaquest_obstacles(ram),
        **_seaquest_lane_balls(ram),
        "oxygen": _seaquest_oxygen(ram),
    }


# --- Qbert ---------------------------------------------------------------------------------
# RAM (AtariARI, and ``QbertExpert``'s docstring): 43 player_x, 67 player_y (0, 0 before
# Qbert is placed; >= 224 is above the screen top: the byte wraps), 106 + r the kind of the
# enemy on cube row r = 1..5 (102 = purple ball / Coily), 74 + r its column code.
# Qbert draws each frame from the RAM of the frame *before* (his x fits it with rms 0.44 px,
# the same frame's with 0.60). Labels use the same frame's RAM (all a step records), one frame
# ahead: Qbert moves <= 1 px/frame in x and ~2 px/frame in y mid-hop.
_QBERT_SCREEN = (0, SCREEN_WIDTH - 1, 0, SCREEN_HEIGHT - 1)
# Player 8 x 19 px, fitted on whole sprites (8 px wide, 18..20 rows; 6,662 frames), hops
# included, so the box follows the sprite in the air: centre x = ram[43] + 0.5 (rms 0.60 px,
# 0.44 with the previous frame's RAM), centre y = 1.036 ram[67] - 0.05 (rms 2.6 px, 2.6 with
# the previous frame's RAM: the vertical scale is not quite linear, standing on row 5 the
# sprite is 1-2 px below the line, and the orange mask catches a few other pixels). Against
# his pixels (calibrate_objects.py): centre error median 1.3 px, p95 3.0 px.
_QBERT_PLAYER_X, _QBERT_PLAYER_Y = (1.0, 0.5), (1.036, -0.05)
_QBERT_PLAYER_SIZE = (8, 19)
_QBERT_WRAP = 224  # player_y at or above this is negative (above the screen top)
# RAM 33 < 4 during the ~190-frame pauses where Qbert is not drawn (after a round or a lost
# life): the best one-byte rule found, 97% agreement with his pixels (87% without it).
_QBERT_SHOWN = 4
# Enemies do not glide: they are drawn on a cube, so the box is the cell of cube (r, c).
# Column: c = (code - 5 + r) / 2, an odd half rounded toward the nearer edge of the row and
# clipped to 0..r (matches all 19 (row, code) pairs seen, 12,000+ frames). Centre x =
# CUBE_X[r][c] + 0.74 (rms 0.64 px, n 6,752; the sprite is 7 or 8 px wide by animation frame).
# Rows: the sprite (ball in the air, squashed ball, Coily stretched or not) stays within rows
# 9.4 + 29.0 r .. 29.3 + 29.1 r (fitted over r = 1..5: max residual 0.6 px): the box is that
# 8 x 21 px cell, centre 29 r + 20, so its centre is up to 7.5 px (median 3) from the sprite's.
# Presence is RAM 106 + r == 102, and this is the loose part: on ~15% of those frames nothing
# purple is drawn (the pauses after a round or a lost life keep the kind; RAM 33, which gates
# Qbert, does not gate it, and no other byte was found that does).
_QBERT_CUBE_X = ((77,), (65, 93), (53, 77, 105), (41, 65, 93, 117), (29, 53, 77, 105, 129))
_QBERT_CUBE_X += ((17, 41, 65, 93, 117, 141),)
_QBERT_CUBE_X_TABLE = np.array([(*xs, *(0,) * (6 - len(xs))) for xs in _QBERT_CUBE_X])  # (6, 6)
_QBERT_ENEMY_DX, _QBERT_ENEMY_Y = 0.74, (29.0, 20.0)  # centre y = 29 r + 20
_QBERT_ENEMY_SIZE = (8, 21)
_QBERT_PURPLE = 102


def _qbert_player(ram: np.ndarray) -> ScreenBoxes:
    x, y = ram[:, 43], ram[:, 67]
    signed_y = np.where(y >= _QBERT_WRAP, y - 256, y)
    return _box(
        _QBERT_PLAYER_X[0] * x + _QBERT_PLAYER_X[1],
        _QBERT_PLAYER_Y[0] * signed_y + _QBERT_PLAYER_Y[1],
        *_QBERT_PLAYER_SIZE,
        ((x > 0) | (y > 0)) & (ram[:, 33] >= _QBERT_SHOWN),
        _QBERT_SCREEN,
    )


def _qbert_enemy_cell(ram: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, present) ``[L]`` of the first cube row 1..5 holding an enemy of ``kind``."""
    rows = np.arange(1, 6)
    is_kind = ram[:, 106 + rows] == kind  # (L, 5)
    present = is_kind.any(axis=1)
    row = rows[np.argmax(is_kind, axis=1)]
    twice = ram[np.arange(len(ram)), 74 + row] - 5 + row  # 2 c, odd between two cubes
    toward_edge = np.where(twice > row, (twice + 1) // 2, twice // 2)  # row's middle is r / 2
    return row, np.clip(toward_edge, 0, row), present


def _qbert_coily(ram: np.ndarray) -> ScreenBoxes:
    row, col, present = _qbert_enemy_cell(ram, _QBERT_PURPLE)
    x = _QBERT_CUBE_X_TABLE[row, col] + _QBERT_ENEMY_DX
    y = _QBERT_ENEMY_Y[0] * row + _QBERT_ENEMY_Y[1]
    return _box(x, y, *_QBERT_ENEMY_SIZE, present, _QBERT_SCREEN)


def _qbert(ram: np.ndarray) -> dict[str, ScreenBoxes]:
    return {"player": _qbert_player(ram), "coily": _qbert_coily(ram)}


# --- public API ----------------------------------------------------------------------------

_GAME_BOXES: dict[str, Callable[[np.ndarray], dict[str, ScreenBoxes]]] = {
    "Breakout": _breakout,
    "Pong": _pong,
    "Qbert": _qbert,
    "Seaquest": _seaquest,
}
_SEAQUEST_NAMES = (
    "player",
    "player_missile",
    *(f"enemy{lane}_{copy}" for lane in range(4) for copy in range(3)),
    *(f"diver{lane}" for lane in range(4)),
    *(f"enemy_missile{lane}" for lane in range(4)),
    "oxygen",
)
_NAMES: dict[str, tuple[str, ...]] = {
    "Breakout": ("player", "ball"),
    "Pong": ("player", "enemy", "ball"),
    "Qbert": ("player", "coily"),
    "Seaquest": _SEAQUEST_NAMES,
}


def _game(name: str) -> str:
    """The canonical name of a supported game from any common spelling (``ALE/Pong-v5``, ...).

    Raises:
        ValueError: the game has no object annotations (names the supported games).
    """
    match = re.fullmatch(r"\s*(?:ALE/)?([A-Za-z0-9_ -]+?)(?:-v\d+)?\s*", str(name))
    key = re.sub(r"[_ -]", "", match.group(1)).lower() if match else ""
    for game in OBJECT_GAMES:
        if game.lower() == key:
            return game
    raise ValueError(
        f"no object annotations for game {name!r}; supported: {', '.join(OBJECT_GAMES)}"
    )


def _check_ram(ram: np.ndarray) -> np.ndarray:
    """``ram`` as int64 ``[L, 128]``.

    Raises:
        ValueError: not an integer array of shape ``[L, 128]`` with values 0..255.
    """
    ram = np.asarray(ram)
    if ram.ndim != 2 or ram.shape[1] != 128:
        raise ValueError(f"ram must have shape [L, 128], got {list(ram.shape)}")
    if not np.issubdtype(ram.dtype, np.integer):
        raise ValueError(f"ram must hold integers (uint8), got dtype {ram.dtype}")
    if ram.size and (ram.min() < 0 or ram.max() > 255):
        raise ValueError("ram must hold bytes (0..255)")
    return ram.astype(np.int64)


def object_names(game: str) -> tuple[str, ...]:
    """Names of the annotated objects of ``game``, in a fixed order.

    Seaquest lanes are numbered from the bottom (lane 0) to the top (lane 3), as in RAM;
    ``enemy{lane}_{copy}`` is copy 0 (left) .. 2 (right) of that lane's shark or sub group,
    ``diver{lane}`` / ``enemy_missile{lane}`` the lane's diver or enemy torpedo (never both),
    ``oxygen`` the filled part of the oxygen bar. Qbert's ``coily`` is the purple ball or Coily
    (the enemy that chases Qbert), boxed as the cube cell it stands on.

    Raises:
        ValueError: unsupported game.
    """
    return _NAMES[_game(game)]


def screen_boxes(game: str, ram: np.ndarray) -> dict[str, ScreenBoxes]:
    """Visible boxes of every object in the 210x160 ALE screen, in pixel indices (inclusive).

    Args:
        game: a supported game (any common spelling).
        ram: integer ``[L, 128]``, the RAM at each step (as :func:`play_episode` records it).

    Raises:
        ValueError: unsupported game or ``ram`` not ``[L, 128]`` integers.
    """
    canonical = _game(game)
    boxes = _GAME_BOXES[canonical](_check_ram(ram))
    return {name: boxes[name] for name in _NAMES[canonical]}


def to_frame_x(x_screen: np.ndarray) -> np.ndarray:
    """Screen column index (0..159) -> 84x84 frame column index (see the module docstring)."""
    return (np.asarray(x_screen) + 0.5) * (FRAME_SIZE / SCREEN_WIDTH) - 0.5


def to_frame_y(y_screen: np.ndarray) -> np.ndarray:
    """Screen row index (0..209) -> 84x84 frame row index (see the module docstring)."""
    return (np.asarray(y_screen) + 0.5) * (FRAME_SIZE / SCREEN_HEIGHT) - 0.5


def object_boxes(game: str, ram: np.ndarray) -> dict[str, np.ndarray]:
    """Visible box of every object in 84x84 frame coordinates.

    Returns:
        name -> float32 ``[L, 4]`` ``(left, top, right, bottom)``: the box's outer edges in
        frame index coordinates (a pixel index ``i`` spans ``i - 0.5 .. i + 0.5``, as in
        ``matplotlib.pyplot.imshow``), NaN rows where the object is absent.

    Raises:
        ValueError: unsupported game or ``ram`` not ``[L, 128]`` integers.
    """
    out = {}
    for name, b in screen_boxes(game, ram).items():
        edges = (
            to_frame_x(b.x0 - 0.5),
            to_frame_y(b.y0 - 0.5),
            to_frame_x(b.x1 + 0.5),
            to_frame_y(b.y1 + 0.5),
        )
        out[name] = np.stack(edges, axis=1).astype(np.float32)
    return out


def object_positions(game: str, ram: np.ndarray) -> dict[str, np.ndarray]:
    """Centre of the visible part of every object in the 84x84 DQN-replay frame.

    Args:
        game: a supported game (``OBJECT_GAMES``; any common spelling).
        ram: integer ``[L, 128]``, the RAM at each step (as :func:`play_episode` records it,
            aligned with the frames).

    Returns:
        name -> float32 ``[L, 2]`` ``(x, y)`` = (column, row) in frame pixel indices, inside
        the frame (``-0.5 < x, y < 83.5``: screen column 159 maps to 83.24, column 0 to
        -0.24); NaN (both) where the object is absent or off screen. Names:
        :func:`object_names`.

    Raises:
        ValueError: unsupported game or ``ram`` not ``[L, 128]`` integers.
    """
    out = {}
    for name, b in screen_boxes(game, ram).items():
        x = to_frame_x((b.x0 + b.x1) / 2)
        y = to_frame_y((b.y0 + b.y1) / 2)
        out[name] = np.stack((x, y), axis=1).astype(np.float32)
    return out
