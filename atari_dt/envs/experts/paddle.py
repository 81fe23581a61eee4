"""The paddle games' experts (Pong, Breakout): predict where the ball meets the paddle's line
and plan the paddle's pushes with a fitted model of its inertia."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from atari_dt.envs.experts.common import action_index
from atari_dt.envs.policies import StepInput


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
