"""Scripted "expert" policies that read the Atari RAM: cheap, strong behaviour data for
Pong, Breakout, Seaquest and Qbert.

Every expert implements :class:`atari_dt.envs.policies.Policy` and uses only ``step.ram`` and
``step.action_meanings`` (actions are looked up by name, never by index). The rules are
deterministic functions of what they have seen this episode; the randomness of an episode comes
from the emulator's sticky actions, and wrapping an expert in
:class:`~atari_dt.envs.policies.EpsilonPolicy` adds more. The generator given to ``reset`` is
accepted for the protocol and is the only one an expert would ever use.

RAM addresses come from AtariARI (``atariari/benchmark/ram_annotations.py``); where this file
relies on a meaning AtariARI does not give (lane order, presence flags, coordinate offsets, the
paddle dynamics, Qbert's tile and enemy bytes), it was measured here against the screen and says
so. ``docs/policies.md`` describes the rules and their measured returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from atari_dt.envs.policies import Policy, StepInput
from atari_dt.errors import UserError

# ----------------------------------------------------------------------------- shared helpers


def action_index(meanings: tuple[str, ...], name: str) -> int:
    """Index of the action called ``name`` in the game's action set.

    Raises:
        ValueError: the action set has no such action (the message lists the valid names).
    """
    try:
        return meanings.index(name)
    except ValueError:
        raise ValueError(f"no action {name!r} in this game's action set {meanings}") from None


def _fold(value: float, low: float, high: float) -> float:
    """``value`` reflected into ``[low, high]``: where a ball moving in a straight line and
    bouncing off walls at ``low`` and ``high`` ends up."""
    span = high - low
    offset = (value - low) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


def _intercept(
    pos: float, speed: float, along: float, along_speed: float, at: float, walls: tuple[int, int]
) -> float:
    """Where a ball at ``pos`` (bouncing between ``walls``) is when its other coordinate
    ``along`` reaches ``at``, given both per-step speeds (``along_speed`` towards ``at``)."""
    steps = (at - along) / along_speed
    return _fold(pos + speed * steps, *walls)


@dataclass(frozen=True)
class PaddleModel:
    """Paddle motion fitted by least squares on RAM from random play (no sticky actions): the
    next step's displacement is ``velocity * last_displacement + sum(push[k] * u_{t-k})`` with
    ``u = -1, 0, +1`` the direction pushed k steps ago. The paddles have inertia and react to a
    push over two to three agent steps, so "move toward the ball" overshoots; planning two steps
    with this model does not."""

    velocity: float
    push: tuple[float, float, float]

    def best_push(self, pos: float, vel: float, pushes: tuple[int, int], target: float) -> int:
        """The push (-1, 0, +1) that brings the paddle nearest ``target`` over the next two
        steps, assuming no push at the second step (so it also brakes in time).

        Args:
            pos: paddle coordinate now; vel: its change over the last step.
            pushes: the pushes of the last two steps, newest first.
            target: where the paddle should be.
        """
        best, best_cost = 0, float("inf")
        for u in (0, -1, 1):  # 0 first: when equally good, do not move
            step1 = self.velocity * vel + self.push[0] * u + self.push[1] * pushes[0]
            step1 += self.push[2] * pushes[1]
            step2 = self.velocity * step1 + self.push[1] * u + self.push[2] * pushes[0]
            cost = abs(pos + step1 - target) + abs(pos + step1 + step2 - target)
            if cost < best_cost - 1e-9:
                best, best_cost = u, cost
        return best


class _PaddleExpert:
    """Common state of the paddle games: previous ball and paddle positions and pushes."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(0)
        self._clear()

    def _clear(self) -> None:
        self._ball: tuple[int, int] | None = None  # (x, y) one step ago; y == 0: no ball
        self._paddle: int | None = None
        self._pushes: tuple[int, int] = (0, 0)

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode; the rules are deterministic, so ``rng`` is only kept."""
        self._rng = rng
        self._clear()

    def _ball_velocity(self, x: int, y: int) -> tuple[int, int] | None:
        """Ball (dx, dy) over the last step, None when the ball was or is off screen."""
        if self._ball is None or self._ball[1] == 0 or y == 0:
            return None
        return x - self._ball[0], y - self._ball[1]

    def _push(self, model: PaddleModel, paddle: int, target: float) -> int:
        """Plan the push toward ``target`` and remember it."""
        vel = 0 if self._paddle is None else paddle - self._paddle
        push = model.best_push(paddle, vel, self._pushes, target)
        self._paddle, self._pushes = paddle, (push, self._pushes[0])
        return push


# ----------------------------------------------------------------------------------- Pong


class PongExpert(_PaddleExpert):
    """Pong from RAM: predict where the ball crosses the paddle's column and meet it with the
    paddle's top or bottom edge, which sends it back steeply (the computer opponent misses those).

    RAM (AtariARI; geometry measured against the screen):

    - 51 ``player_y``: the right (agent's) paddle; screen rows ``y-14 .. y+1``; 38 (top) .. 203.
    - 50 ``enemy_y``: the computer's paddle, same scale.
    - 49 ``ball_x``: grows toward the agent; the ball reaches the paddle column near 188.
    - 54 ``ball_y``: same scale as ``player_y`` (ball rows ``y-14 .. y-11``); 0 while no ball is
      in play; the ball bounces between about 47 and 207.

    In Pong's minimal action set ``RIGHT`` moves the paddle up (smaller y) and ``LEFT`` down.

    Rule: while the ball comes toward the agent, aim ``player_y = intercept - rel``, with
    ``rel = top_edge_rel`` (ball hits the paddle's top edge, goes up) when the opponent is above
    the intercept and ``bottom_edge_rel`` otherwise; any other time wait at the centre. Measured:
    ``ball_y - player_y`` at the hit of -3..0 or 13..17 mostly returns the ball at 8 px/step
    vertically, the only speed at which points were won; aiming the centre (6) conceded no
    point in 12k steps but won only 16.
    """

    PLAYER_Y, ENEMY_Y, BALL_X, BALL_Y = 51, 50, 49, 54
    HIT_X = 188  # ball_x where the ball meets the agent's paddle
    WALLS = (47, 207)  # ball_y range between the top and bottom walls
    REST_Y = 125  # paddle centre of the field
    MODEL = PaddleModel(velocity=0.197, push=(10.03, 7.79, 0.47))  # +1 = down

    def __init__(self, top_edge_rel: int = 0, bottom_edge_rel: int = 13) -> None:
        super().__init__()
        self.top_edge_rel, self.bottom_edge_rel = top_edge_rel, bottom_edge_rel

    def act(self, step: StepInput) -> int:
        ram = step.ram
        bx, by = int(ram[self.BALL_X]), int(ram[self.BALL_Y])
        target = self._target(bx, by, int(ram[self.ENEMY_Y]))
        self._ball = (bx, by)
        push = self._push(self.MODEL, int(ram[self.PLAYER_Y]), target)
        name = {-1: "RIGHT", 0: "NOOP", 1: "LEFT"}[push]  # RIGHT = up in Pong
        return action_index(step.action_meanings, name)

    def _target(self, bx: int, by: int, enemy_y: int) -> float:
        """Paddle y to aim for: edge-on at the predicted intercept, else the centre."""
        velocity = self._ball_velocity(bx, by)
        if velocity is None or velocity[0] <= 0:
            return self.REST_Y  # no ball, or it moves away: wait where any return is reachable
        y = float(by)
        if bx < self.HIT_X:
            y = _intercept(by, velocity[1], bx, velocity[0], self.HIT_X, self.WALLS)
        # edge that sends the ball toward the opponent's side: measured 38 won / 7 lost per 12k
        # steps, against 26 / 54 for the other edge choice (the opponent overshoots it)
        rel = self.top_edge_rel if enemy_y <= y else self.bottom_edge_rel
        return y - rel

    def spec(self) -> dict[str, Any]:
        return {
            "name": "expert_pong",
            "top_edge_rel": self.top_edge_rel,
            "bottom_edge_rel": self.bottom_edge_rel,
        }


# ------------------------------------------------------------------------------- Breakout


class BreakoutExpert(_PaddleExpert):
    """Breakout from RAM: serve when no ball is in play, otherwise put the paddle under the point
    where the falling ball will reach the paddle's row (bounces off the side walls included).

    RAM (AtariARI; ranges and offsets measured):

    - 99 ``ball_x``: bounces off the side walls at about 57 and 199.
    - 101 ``ball_y``: grows downward; the paddle returns the ball at about 174..181; 0 while no
      ball is in play (before a serve, after a miss).
    - 72 ``player_x``: the paddle, 55 .. 191 in the same units as ``ball_x`` but offset: the
      paddle is centred under the ball at ``player_x ~ ball_x - 10`` (best of offsets 6..14).

    Rule: ``FIRE`` when ``ball_y == 0``; else aim ``player_x = x - offset`` with ``x`` the
    predicted ``ball_x`` at the paddle row while the ball falls, the current ``ball_x`` while it
    rises, and steer with the fitted paddle model.
    """

    BALL_X, BALL_Y, PLAYER_X = 99, 101, 72
    HIT_Y = 178  # ball_y at which the paddle returns the ball
    WALLS = (57, 199)  # ball_x range between the side walls
    MODEL = PaddleModel(velocity=-0.431, push=(12.28, 15.55, 4.84))  # +1 = right

    def __init__(self, offset: int = 10) -> None:
        super().__init__()
        self.offset = offset

    def act(self, step: StepInput) -> int:
        ram = step.ram
        bx, by = int(ram[self.BALL_X]), int(ram[self.BALL_Y])
        target = self._target(bx, by)
        self._ball = (bx, by)
        if by == 0:
            self._clear()  # a new ball starts from rest; old motion would mislead the planner
            return action_index(step.action_meanings, "FIRE")
        push = self._push(self.MODEL, int(ram[self.PLAYER_X]), target)
        name = {-1: "LEFT", 0: "NOOP", 1: "RIGHT"}[push]
        return action_index(step.action_meanings, name)

    def _target(self, bx: int, by: int) -> float:
        """Paddle x to aim for: under the predicted landing point of a falling ball."""
        velocity = self._ball_velocity(bx, by)
        x = float(bx)
        if velocity is not None and velocity[1] > 0 and by < self.HIT_Y:
            x = _intercept(bx, velocity[0], by, velocity[1], self.HIT_Y, self.WALLS)
        return x - self.offset

    def spec(self) -> dict[str, Any]:
        return {"name": "expert_breakout", "offset": self.offset}


# ------------------------------------------------------------------------------- Seaquest


class SeaquestExpert:
    """Seaquest from RAM: hold a lane near the bottom and shoot toward whatever comes, fetch a
    diver when none is carried, surface to refill oxygen when low (only with a diver, since
    surfacing without one costs a life), and cross lanes only when no enemy is close.

    RAM (AtariARI names; lane order, flags and offsets measured against the screen). Lane ``i``
    counts from the bottom (0) to the top (3); the player's ``y`` for lane i is
    ``LANE_Y[i]`` = 105, 81, 57, 33.

    - 30+i ``enemy_obstacle_x``: enemy x in lane i.
    - 36+i: enemy sprite pattern in lane i (measured: when it is 1 the visible enemy is drawn
      32 columns right of ``enemy_obstacle_x``, when 4 at it).
    - 40+i: non-zero iff an enemy is in lane i (measured: agrees with the screen 99.6 %).
    - 62 ``divers_collected_count``: 0..6.
    - 70 ``player_x``: the sub covers screen columns ``x .. x+15``; 21 .. 134.
    - 71+i ``diver_or_enemy_missile_x``: x+2 of lane i's diver or enemy missile, 0 if none
      (measured: missiles move >= 3 columns per step, divers about 1).
    - 86 ``player_direction``: 0 facing right, 8 facing left (torpedoes fly that way).
    - 97 ``player_y``: 13 at the surface .. 108 at the bottom; body at screen rows y+38..y+42.
    - 102 ``oxygen_meter_value``: 64 full, about -1 every 9 steps under water; 0 costs a life.

    Rule each step (always firing): vertical goal = the surface when surfacing, else the home
    lane (a lane with a diver when none is carried, else ``home_lane``); a vertical move is
    held back while the next lane on the way has an enemy within ``safe_distance`` columns;
    step up out of the lane when a missile approaches within ``dodge_distance``; face the enemy
    in the current lane, else turn every ``idle_turn`` steps; stay within ``x_band`` of the
    centre (enemies appear at the edges too close to shoot).
    """

    LANE_Y = (105, 81, 57, 33)
    SURFACE_Y = 13
    ENEMY_X, ENEMY_PATTERN, ENEMY_PRESENT = 30, 36, 40
    DIVERS, PLAYER_X, DIVER_X, DIRECTION, PLAYER_Y, OXYGEN = 62, 70, 71, 86, 97, 102
    FACING_LEFT = 8
    X_CENTRE = 68  # player_x of the middle of the field
    LANE_TOLERANCE = 3  # |y - LANE_Y| within which the sub counts as in the lane

    def __init__(
        self,
        home_lane: int = 0,
        surface_oxygen: int = 16,
        safe_distance: int = 40,
        dodge_distance: int = 40,
        x_band: int = 24,
        idle_turn: int = 8,
    ) -> None:
        self.home_lane, self.surface_oxygen = home_lane, surface_oxygen
        self.safe_distance, self.dodge_distance = safe_distance, dodge_distance
        self.x_band, self.idle_turn = x_band, idle_turn
        self._rng = np.random.default_rng(0)
        self._clear()

    def _clear(self) -> None:
        self._surfacing, self._idle_steps, self._idle_dir = False, 0, 1
        self._previous: np.ndarray | None = None

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode; the rules are deterministic, so ``rng`` is only kept."""
        self._rng = rng
        self._clear()

    def act(self, step: StepInput) -> int:
        ram = step.ram.astype(np.int64)  # uint8 arithmetic would wrap
        centre = int(ram[self.PLAYER_X]) + 8
        y = int(ram[self.PLAYER_Y])
        self._update_surfacing(ram, y)
        goal_y = self._goal_y(ram, y, centre)
        vertical = self._vertical(ram, y, goal_y, centre)
        horizontal = self._horizontal(ram, y, centre)
        self._previous = ram
        return action_index(step.action_meanings, f"{vertical}{horizontal}FIRE")

    # -- decisions

    def _update_surfacing(self, ram: np.ndarray, y: int) -> None:
        """Surface with oxygen low and a diver aboard, or with all six divers (bonus)."""
        divers = int(ram[self.DIVERS])
        if y <= self.SURFACE_Y:
            self._surfacing = False
        elif divers >= 6 or (divers >= 1 and int(ram[self.OXYGEN]) < self.surface_oxygen):
            self._surfacing = True

    def _goal_y(self, ram: np.ndarray, y: int, centre: int) -> int:
        """Where to be vertically: surface, a lane whose diver swims toward the sub, a gap
        above a lane with an incoming missile, or the home lane."""
        if self._surfacing:
            return self.SURFACE_Y
        lane = self.home_lane
        if int(ram[self.DIVERS]) == 0:  # without a diver, surfacing costs a life: fetch one
            divers = [i for i in range(4) if ram[self.DIVER_X + i] > 0 and not self._fast(ram, i)]
            if divers:
                lane = min(divers, key=lambda i: abs(int(ram[self.DIVER_X + i]) + 2 - centre))
        near = self._lane_of(y, slack=12)
        if near is not None and self._missile_incoming(ram, near, centre):
            return self.LANE_Y[near] - 12  # the gap above is out of the missile's row
        return self.LANE_Y[lane]

    def _vertical(self, ram: np.ndarray, y: int, goal_y: int, centre: int) -> str:
        """``UP``, ``DOWN`` or ``""``: toward ``goal_y`` unless the next lane is guarded."""
        tol = self.LANE_TOLERANCE
        if y < goal_y - tol:
            direction = 1
        elif y > goal_y + tol or (self._surfacing and y > self.SURFACE_Y):
            direction = -1  # the refill needs y at the very top, not just near it
        else:
            return ""
        ahead = [
            i
            for i, lane_y in enumerate(self.LANE_Y)
            if (lane_y - y) * direction > tol and (lane_y - goal_y) * direction <= tol
        ]
        if ahead:
            nxt = min(ahead, key=lambda i: abs(self.LANE_Y[i] - y))
            if abs(self.LANE_Y[nxt] - y) <= 18 and self._enemy_near(ram, nxt, centre):
                return ""  # wait in the gap: entering beside an enemy is the usual death
        return "DOWN" if direction > 0 else "UP"

    def _horizontal(self, ram: np.ndarray, y: int, centre: int) -> str:
        """``LEFT``, ``RIGHT`` or ``""``: turn to face the lane's enemy (or patrol)."""
        lane = self._lane_of(y, slack=self.LANE_TOLERANCE + 2)
        if lane is not None and ram[self.ENEMY_PRESENT + lane] > 0:
            want = -1 if self._enemy_x(ram, lane) < centre else 1
        else:
            self._idle_steps += 1
            if self._idle_steps % self.idle_turn == 0:
                self._idle_dir = -self._idle_dir
            want = self._idle_dir
        x = int(ram[self.PLAYER_X])
        if x < self.X_CENTRE - self.x_band:
            want = 1
        elif x > self.X_CENTRE + self.x_band:
            want = -1
        facing = -1 if ram[self.DIRECTION] == self.FACING_LEFT else 1
        if want == facing:
            return ""  # plain FIRE keeps the heading without drifting
        return "RIGHT" if want > 0 else "LEFT"

    # -- RAM readings

    def _lane_of(self, y: int, slack: int) -> int | None:
        """The lane whose row is within ``slack`` of ``y``, if any."""
        dist = [abs(y - lane_y) for lane_y in self.LANE_Y]
        lane = int(np.argmin(dist))
        return lane if dist[lane] <= slack else None

    def _enemy_x(self, ram: np.ndarray, lane: int) -> int:
        """Screen-column estimate of lane ``lane``'s visible enemy."""
        shift = 32 if ram[self.ENEMY_PATTERN + lane] == 1 else 0
        return (int(ram[self.ENEMY_X + lane]) + shift) % 256

    def _enemy_near(self, ram: np.ndarray, lane: int, centre: int) -> bool:
        return bool(ram[self.ENEMY_PRESENT + lane] > 0) and (
            abs(self._enemy_x(ram, lane) - centre) < self.safe_distance
        )

    def _fast(self, ram: np.ndarray, lane: int) -> bool:
        """Lane's diver/missile slot moved >= 3 columns last step: a missile, not a diver."""
        if self._previous is None or self._previous[self.DIVER_X + lane] == 0:
            return False
        return abs(int(ram[self.DIVER_X + lane]) - int(self._previous[self.DIVER_X + lane])) >= 3

    def _missile_incoming(self, ram: np.ndarray, lane: int, centre: int) -> bool:
        if self.dodge_distance <= 0 or self._previous is None or ram[self.DIVER_X + lane] == 0:
            return False
        if not self._fast(ram, lane):
            return False
        x = int(ram[self.DIVER_X + lane]) + 2
        moving = int(ram[self.DIVER_X + lane]) - int(self._previous[self.DIVER_X + lane])
        return (x - centre) * moving < 0 and abs(x - centre) < self.dodge_distance

    def spec(self) -> dict[str, Any]:
        return {
            "name": "expert_seaquest",
            "home_lane": self.home_lane,
            "surface_oxygen": self.surface_oxygen,
            "safe_distance": self.safe_distance,
            "dodge_distance": self.dodge_distance,
            "x_band": self.x_band,
            "idle_turn": self.idle_turn,
        }


# ---------------------------------------------------------------------------------- Qbert

Cube = tuple[int, int]  # (row, col): row 0 is the top cube .. 5 the bottom row; col 0..row


class QbertExpert:
    """Qbert from RAM: hop along the shortest path to the nearest cube that still needs its
    colour changed, never off the pyramid, and around the purple ball and Coily.

    Cubes are ``(row, col)``, row 0 the top cube, col 0 the leftmost of a row. In Qbert's
    minimal action set (measured against the screen) ``UP`` hops up-right to ``(r-1, c)``,
    ``RIGHT`` down-right to ``(r+1, c+1)``, ``LEFT`` up-left to ``(r-1, c-1)`` and ``DOWN``
    down-left to ``(r+1, c)``. A hop takes about 8 agent steps; an action registers only while
    Qbert stands on a cube.

    RAM (AtariARI names; everything else measured against the screen):

    - 43 ``player_x``, 67 ``player_y``: Qbert stands on cube (r, c) when ``y == 25 + 28 r``
      and ``x`` is within 2 of ``CUBE_X[r][c]`` (the cube tops' screen centres; (5, 0) reads 16
      or 17). Mid-hop this held, in the traces looked at, only a step before landing, on
      the cube landed on.
    - Tile colours, row by row, left to right: 21 | 52 54 | 83 85 87 | 98 100 102 104 |
      1 3 5 7 9 | 32 34 36 38 40 42; the value is the colour (148 blue, 26 yellow, ...).
      Agreement with the cube tops' screen colour on random play: 99.7-100 % for the 16 cubes
      random play changed; the other five follow the pattern (the expert completes rounds).
    - ``106 + r`` (r = 1..5): kind of the enemy in row r; 102 is purple (the ball and
      Coily, which kill), 196 the green ball, other values (4, 6, 68, ...) nothing visible.
    - ``74 + r``: that enemy's column as ``5 - r + 2 c``, the code of AtariARI's
      ``player_column`` (35) for Qbert.

    No byte holds the round's target colour (none read 26 through round 1 and 148 through
    round 2, its targets), so it is inferred: the newest colour to appear on the pyramid since
    all 21 cubes were last one colour (a round start). Rule each step: do nothing while Qbert
    is in the air; else hop toward the nearest cube not of that colour along a path that
    avoids every cube within ``enemy_margin`` hops of a purple enemy (if all cubes have it, as
    in rounds that need two hops per cube, toward any other cube); without such a path, hop to
    the neighbouring cube farthest from the enemies. Ties go in ``MOVES`` order, down first:
    ~15,000 against ~11,000 for up first over the first 1,500 steps of two seeds.
    """

    CUBE_X = ((77,), (65, 93), (53, 77, 105), (41, 65, 93, 117), (29, 53, 77, 105, 129))
    CUBE_X += ((17, 41, 65, 93, 117, 141),)
    TILES = (21, 52, 54, 83, 85, 87, 98, 100, 102, 104, 1, 3, 5, 7, 9, 32, 34, 36, 38, 40, 42)
    PLAYER_X, PLAYER_Y, ENEMY_COLUMN, ENEMY_KIND = 43, 67, 74, 106  # the last two: + row
    PURPLE = 102
    MOVES = (("RIGHT", (1, 1)), ("DOWN", (1, 0)), ("UP", (-1, 0)), ("LEFT", (-1, -1)))
    CUBES: tuple[Cube, ...] = tuple((r, c) for r in range(6) for c in range(r + 1))

    def __init__(self, enemy_margin: int = 1) -> None:
        self.enemy_margin = enemy_margin
        self._rng = np.random.default_rng(0)
        self._clear()

    def _clear(self) -> None:
        self._seen: set[int] = set()  # colours on the pyramid since the round started
        self._target: int | None = None  # the newest of them: the round's target colour

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode; the rules are deterministic, so ``rng`` is only kept."""
        self._rng = rng
        self._clear()

    def act(self, step: StepInput) -> int:
        ram = step.ram
        tiles = [int(ram[address]) for address in self.TILES]
        self._update_target(tiles)
        here = self._standing(ram)
        if here is None:
            return action_index(step.action_meanings, "NOOP")  # in the air: ignored anyway
        enemies = self._enemies(ram)
        todo = {cube for cube, tile in zip(self.CUBES, tiles, strict=True) if tile != self._target}
        todo = (todo or set(self.CUBES)) - {here}
        danger = {cube for cube in self.CUBES if _hops_to(cube, enemies) <= self.enemy_margin}
        move = self._first_move(here, todo, danger) or self._escape(here, enemies)
        return action_index(step.action_meanings, move)

    def _update_target(self, tiles: list[int]) -> None:
        """All cubes one colour: a round starts; else the newest colour seen is the target."""
        if len(set(tiles)) == 1:
            self._seen, self._target = {tiles[0]}, None
            return
        for tile in tiles:
            if tile not in self._seen:
                self._seen.add(tile)
                self._target = tile

    def _standing(self, ram: np.ndarray) -> Cube | None:
        """The cube Qbert stands on, None while he is in the air (or off the pyramid)."""
        x, y = int(ram[self.PLAYER_X]), int(ram[self.PLAYER_Y])
        row, rest = divmod(y - 25, 28)
        if rest or not 0 <= row <= 5:
            return None
        for col, cube_x in enumerate(self.CUBE_X[row]):
            if abs(x - cube_x) <= 2:
                return row, col
        return None

    def _enemies(self, ram: np.ndarray) -> set[Cube]:
        """Cubes of the purple ball / Coily (both neighbours when the column code is odd for
        the row, i.e. between two cubes)."""
        cubes = set()
        for row in range(1, 6):
            if ram[self.ENEMY_KIND + row] == self.PURPLE:
                twice = int(ram[self.ENEMY_COLUMN + row]) - 5 + row  # = 2 * col
                cubes |= {(row, col) for col in {twice // 2, (twice + 1) // 2} if 0 <= col <= row}
        return cubes

    def _first_move(self, here: Cube, goals: set[Cube], avoid: set[Cube]) -> str | None:
        """First hop of a shortest path from ``here`` to any of ``goals`` through cubes not in
        ``avoid`` (breadth-first, moves tried in ``MOVES`` order); None when none exists."""
        first: dict[Cube, str | None] = {here: None}
        frontier = [here]
        while frontier:
            nxt = []
            for cube in frontier:
                for name, target in _hops(cube, self.MOVES):
                    if target in first or target in avoid:
                        continue
                    first[target] = first[cube] or name
                    if target in goals:
                        return first[target]
                    nxt.append(target)
            frontier = nxt
        return None

    def _escape(self, here: Cube, enemies: set[Cube]) -> str:
        """The hop to the neighbouring cube farthest from the enemies (NOOP if all are taken)."""
        options = [(name, cube) for name, cube in _hops(here, self.MOVES) if cube not in enemies]
        if not options:
            return "NOOP"
        return max(options, key=lambda option: _hops_to(option[1], enemies))[0]

    def spec(self) -> dict[str, Any]:
        return {"name": "expert_qbert", "enemy_margin": self.enemy_margin}


def _hops(cube: Cube, moves: tuple[tuple[str, tuple[int, int]], ...]) -> list[tuple[str, Cube]]:
    """The (action, cube) pairs one hop from ``cube`` that stay on the pyramid."""
    out = []
    for name, (d_row, d_col) in moves:
        row, col = cube[0] + d_row, cube[1] + d_col
        if 0 <= col <= row <= 5:
            out.append((name, (row, col)))
    return out


def _hops_to(cube: Cube, others: set[Cube]) -> int:
    """Fewest hops from ``cube`` to the nearest of ``others`` (a large number if none). With
    ``u = col`` and ``v = row - col`` every hop changes one of them by 1, so hops are the
    Manhattan distance in (u, v)."""
    return min(
        (abs(cube[1] - c) + abs((cube[0] - cube[1]) - (r - c)) for r, c in others), default=99
    )


# ------------------------------------------------------------------------------- registry

EXPERTS: dict[str, type] = {
    "Pong": PongExpert,
    "Breakout": BreakoutExpert,
    "Seaquest": SeaquestExpert,
    "Qbert": QbertExpert,
}


def make_expert(game: str, **params: Any) -> Policy:
    """The expert for ``game`` (any spelling ale-py knows), built with ``params``.

    Raises:
        UserError: unknown game, or a game without an expert (lists those with one).
    """
    from atari_dt.envs.games import canonical_game

    name = canonical_game(game)
    if name not in EXPERTS:
        raise UserError(f"no scripted expert for {name}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[name](**params)
