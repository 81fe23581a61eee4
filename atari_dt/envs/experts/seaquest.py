"""The Seaquest expert."""

from __future__ import annotations

from typing import Any

import numpy as np

from atari_dt.envs.experts.common import action_index
from atari_dt.envs.policies import StepInput


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
