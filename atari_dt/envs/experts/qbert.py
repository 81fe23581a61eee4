"""The Qbert expert."""

from __future__ import annotations

from typing import Any

import numpy as np

from atari_dt.envs.experts.common import action_index
from atari_dt.envs.policies import StepInput

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
