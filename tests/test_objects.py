"""Object labels from RAM (atari_dt.envs.objects), checked on real DQN-replay rollouts."""

from __future__ import annotations

import numpy as np
import pytest
from seeds import seed

from atari_dt.envs.dqn_replay import make_dqn_replay_env
from atari_dt.envs.experts import QbertExpert
from atari_dt.envs.objects import (
    OBJECT_GAMES,
    object_boxes,
    object_names,
    object_positions,
    screen_boxes,
)
from atari_dt.envs.play import play_episode
from atari_dt.envs.policies import RandomPolicy

STEPS = {"Pong": 500, "Breakout": 500, "Seaquest": 400, "Qbert": 400}
# Random play hops Qbert off the pyramid within ~100 steps; the expert covers it and meets Coily.
POLICIES = {"Qbert": QbertExpert}


@pytest.fixture(scope="module")
def rollouts() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """game -> (frames uint8 [L, 84, 84], ram uint8 [L, 128]): random-policy (Qbert: expert)
    episodes recorded as the DQN-replay collector records them, concatenated up to STEPS[game]
    steps."""
    out = {}
    for game, steps in STEPS.items():
        env = make_dqn_replay_env(game)
        frames, rams, episode_seed = [], [], seed(3)
        try:
            while sum(len(r) for r in rams) < steps:
                left = steps - sum(len(r) for r in rams)
                policy = POLICIES.get(game, RandomPolicy)()
                episode = play_episode(env, policy, seed=episode_seed, max_steps=left)
                frames.append(episode.frames)
                rams.append(episode.ram)
                episode_seed += 1
        finally:
            env.close()
        out[game] = (np.concatenate(frames), np.concatenate(rams))
    return out


def centroid(
    frames: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], background: float
) -> np.ndarray:
    """float [L, 2] (x, y) centroid of the pixels brighter than ``background`` in an inclusive
    window of the 84x84 frames; NaN where there are none."""
    window = frames[:, rows[0] : rows[1] + 1, cols[0] : cols[1] + 1].astype(np.float64)
    weight = np.clip(window - background, 0, None)
    total = weight.sum(axis=(1, 2))
    ys, xs = np.mgrid[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        xy = np.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], 1)
    return np.where((total > 30)[:, None], xy, np.nan)


def pixel_agreement(
    positions: np.ndarray,
    frames: np.ndarray,
    rows: tuple[int, int],
    cols: tuple[int, int],
    background: float,
    axes: tuple[int, ...],
) -> tuple[float, int]:
    """(fraction of steps within 2 px, number of steps compared): RAM position vs the bright
    pixels' centroid, on steps where both exist and the position lies in the window."""
    found = centroid(frames, rows, cols, background)
    inside = np.isfinite(positions[:, 0]) & np.isfinite(found[:, 0])
    inside &= (positions[:, 1] >= rows[0]) & (positions[:, 1] <= rows[1])
    inside &= (positions[:, 0] >= cols[0]) & (positions[:, 0] <= cols[1])
    error = np.abs(positions[inside][:, axes] - found[inside][:, axes]).max(axis=1)
    return float(np.mean(error <= 2.0)) if inside.any() else 0.0, int(inside.sum())


@pytest.mark.parametrize("game", OBJECT_GAMES)
def test_positions_inside_frame_or_nan(rollouts, game: str) -> None:
    """Every object has a float32 [L, 2] position inside the 84x84 frame, or NaN (both coords)."""
    _, ram = rollouts[game]
    positions = object_positions(game, ram)
    assert tuple(positions) == object_names(game)
    for name, xy in positions.items():
        assert xy.shape == (len(ram), 2) and xy.dtype == np.float32, name
        finite = np.isfinite(xy)
        np.testing.assert_array_equal(finite[:, 0], finite[:, 1], err_msg=name)
        # Pixel i spans i - 0.5 .. i + 0.5: screen column 159 is at 83.24, column 0 at -0.24.
        assert np.all((xy[finite] > -0.5) & (xy[finite] < 83.5)), name
    assert np.isfinite(positions["player"][:, 0]).mean() > 0.5  # the player is mostly on screen


@pytest.mark.parametrize("game", OBJECT_GAMES)
def test_boxes_contain_positions(rollouts, game: str) -> None:
    """Box centres are the positions; boxes lie within the frame's outer edges."""
    _, ram = rollouts[game]
    positions, boxes = object_positions(game, ram), object_boxes(game, ram)
    for name, box in boxes.items():
        ok = np.isfinite(box[:, 0])
        np.testing.assert_array_equal(ok, np.isfinite(positions[name][:, 0]), err_msg=name)
        centre = np.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], axis=1)
        np.testing.assert_allclose(centre[ok], positions[name][ok], atol=1e-4, err_msg=name)
        assert np.all(box[ok] >= -0.5) and np.all(box[ok] <= 83.5), name
        assert np.all(box[ok, 2] > box[ok, 0]) and np.all(box[ok, 3] > box[ok, 1]), name


def test_pong_matches_pixels(rollouts) -> None:
    """Ball and paddles sit on their bright pixels (within 2 px) on most steps. The frame also
    holds the previous emulator frame (max-pool), so a fast paddle shows twice: the random
    policy's paddle agrees less often than the ball and the computer's paddle."""
    frames, ram = rollouts["Pong"]
    positions = object_positions("Pong", ram)
    background = 87.0  # grey of Pong's brown field; rows 14..76 lie between the white borders
    ball = pixel_agreement(positions["ball"], frames, (14, 76), (12, 71), background, (0, 1))
    enemy = pixel_agreement(positions["enemy"], frames, (14, 76), (7, 11), background, (1,))
    player = pixel_agreement(positions["player"], frames, (14, 76), (72, 76), background, (1,))
    assert ball[1] > 100 and ball[0] >= 0.95, ball
    assert enemy[1] > 100 and enemy[0] >= 0.9, enemy
    assert player[1] > 100 and player[0] >= 0.7, player


def test_breakout_matches_pixels(rollouts) -> None:
    """Ball (below the bricks) and paddle sit on their pixels (within 2 px) on most steps
    (the random paddle's quick moves show twice in the max-pooled frame)."""
    frames, ram = rollouts["Breakout"]
    positions = object_positions("Breakout", ram)
    ball = pixel_agreement(positions["ball"], frames, (38, 74), (5, 78), 0.0, (0, 1))
    paddle = pixel_agreement(positions["player"], frames, (75, 77), (5, 78), 0.0, (0,))
    assert ball[1] > 50 and ball[0] >= 0.95, ball
    assert paddle[1] > 100 and paddle[0] >= 0.9, paddle


def test_seaquest_objects_on_non_water_pixels(rollouts) -> None:
    """Each visible Seaquest object's position has a pixel unlike the sea within 1 px."""
    frames, ram = rollouts["Seaquest"]
    sea = np.median(frames[:, 40:60, 40:60])  # the open water's grey
    for name, xy in object_positions("Seaquest", ram).items():
        if name == "oxygen":
            continue  # on the grey panel, not in the water
        steps = np.flatnonzero(np.isfinite(xy[:, 0]))
        hits = []
        for t in steps:
            c, r = np.rint(xy[t]).astype(int)
            patch = frames[t, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2].astype(float)
            hits.append(np.abs(patch - sea).max() > 20)
        if len(hits) >= 10:
            assert np.mean(hits) >= 0.9, (name, np.mean(hits), len(hits))


def test_seaquest_lanes_and_exclusive_balls(rollouts) -> None:
    """Lane 0 is the bottom lane; a lane holds a diver or an enemy torpedo, never both."""
    _, ram = rollouts["Seaquest"]
    boxes = screen_boxes("Seaquest", ram)
    forced = ram.copy()
    forced[:, 30:34] = 60  # every lane's group at column 60, all three copies alive
    forced[:, 36:40] = 7
    forced[:, 89:93] = 0  # sharks
    y = [object_positions("Seaquest", forced)[f"enemy{lane}_0"][:, 1] for lane in range(4)]
    assert np.all(y[0] > y[1]) and np.all(y[1] > y[2]) and np.all(y[2] > y[3])
    for lane in range(4):
        both = np.isfinite(boxes[f"diver{lane}"].x0) & np.isfinite(boxes[f"enemy_missile{lane}"].x0)
        assert not both.any()


def qbert_standing(ram: np.ndarray) -> np.ndarray:
    """bool [L]: Qbert stands on a cube (QbertExpert's rule) and is drawn (RAM 33 >= 4)."""
    x, y = ram[:, 43].astype(int), ram[:, 67].astype(int)
    row, rest = np.divmod(y - 25, 28)
    on_row = (rest == 0) & (row >= 0) & (row <= 5)
    near = [
        on_row[t] and min(abs(x[t] - c) for c in QbertExpert.CUBE_X[row[t]]) <= 2
        for t in range(len(ram))
    ]
    return np.array(near, dtype=bool) & (ram[:, 33] >= 4)


def has_grey(frames: np.ndarray, boxes: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """bool [L]: a pixel with grey in lo..hi lies inside each (left, top, right, bottom) box."""
    out = []
    for frame, (left, top, right, bottom) in zip(frames, boxes, strict=True):
        rows = slice(int(np.ceil(top)), int(np.floor(bottom)) + 1)
        cols = slice(int(np.ceil(left)), int(np.floor(right)) + 1)
        patch = frame[rows, cols]
        out.append(bool(((patch >= lo) & (patch <= hi)).any()))
    return np.array(out)


def test_qbert_player_box_covers_qbert(rollouts) -> None:
    """While Qbert stands on a cube his sprite is where RAM says (x exact, y within ~2 screen
    px, objects.py), and an 8 x 19 screen-px sprite covers whole 84x84 pixels: some pixel in
    his box has his grey (his orange has luminance 111 in ALE's grey palette; averaging with
    neighbours gives 100..120 for his inner pixels). The same box one cube-half (12 screen px)
    to the right, on the same rows, is the control: there that grey is rare. The bounds leave
    room for the frames where Coily or a ball covers him."""
    frames, ram = rollouts["Qbert"]
    standing = qbert_standing(ram)
    box = object_boxes("Qbert", ram)["player"]
    assert standing.sum() >= 50, standing.sum()
    assert np.isfinite(box[standing]).all()
    control = box.copy()
    control[:, [0, 2]] += 12 * 84 / 160
    hits = has_grey(frames[standing], box[standing], 100, 120)
    misses = has_grey(frames[standing], control[standing], 100, 120)
    assert hits.mean() >= 0.8 and misses.mean() <= 0.3, (hits.mean(), misses.mean())


def test_qbert_coily_on_a_cube_cell() -> None:
    """Coily's column code (RAM 74 + r) maps to a cube of its row; an odd code near an edge
    goes to the edge cube; no purple kind (RAM 106 + r != 102) is NaN."""
    ram = np.zeros((4, 128), dtype=np.uint8)
    ram[:, 43], ram[:, 67], ram[:, 33] = 77, 25, 10  # Qbert on the top cube
    ram[0, 106 + 1], ram[0, 74 + 1] = 102, 4  # row 1, code 4: cube (1, 0)
    ram[1, 106 + 4], ram[1, 74 + 4] = 102, 2  # row 4, code 2 (odd half): edge cube (4, 0)
    ram[2, 106 + 5], ram[2, 74 + 5] = 102, 9  # row 5, code 9: edge cube (5, 5)
    boxes = screen_boxes("Qbert", ram)
    centre_x = (boxes["coily"].x0 + boxes["coily"].x1) / 2
    np.testing.assert_allclose(centre_x[:3] - 0.74, [65, 29, 141])
    assert np.isnan(centre_x[3])
    assert np.isfinite(boxes["player"].x0).all()


def test_known_ram_values_map_to_frame_coordinates() -> None:
    """Fitted maps and the 160x210 -> 84x84 conversion on hand-set RAM: Pong ball at RAM
    (x=100, y=100) covers screen columns 51..52 and rows 86..89 (top = y - 14)."""
    ram = np.zeros((1, 128), dtype=np.uint8)
    ram[0, 49], ram[0, 54] = 100, 100
    ball = object_positions("Pong", ram)["ball"][0]
    np.testing.assert_allclose(ball[0], (51.5 + 0.5) * 84 / 160 - 0.5, atol=1e-5)
    np.testing.assert_allclose(ball[1], (87.5 + 0.5) * 84 / 210 - 0.5, atol=1e-5)
    ram = np.zeros((1, 128), dtype=np.uint8)  # Breakout: ram[101] = 0 means no ball in play
    ram[0, 99] = 100
    assert np.isnan(object_positions("Breakout", ram)["ball"]).all()


@pytest.mark.parametrize("spelling", ["pong", "ALE/Pong-v5", "Pong-v4", " PONG "])
def test_game_spellings(spelling: str) -> None:
    assert object_names(spelling) == ("player", "enemy", "ball")


@pytest.mark.parametrize("game", ["MontezumaRevenge", "pongg", ""])
def test_unknown_game_names_supported_games(game: str) -> None:
    ram = np.zeros((2, 128), dtype=np.uint8)
    for call in (lambda: object_names(game), lambda: object_positions(game, ram)):
        with pytest.raises(ValueError, match="supported: Breakout, Pong, Qbert, Seaquest"):
            call()


@pytest.mark.parametrize(
    "ram",
    [
        np.zeros(128, dtype=np.uint8),
        np.zeros((3, 127), dtype=np.uint8),
        np.zeros((3, 128, 1), dtype=np.uint8),
        np.zeros((3, 128), dtype=np.float32),
        np.full((3, 128), 256, dtype=np.int64),
    ],
    ids=["1d", "127 bytes", "3d", "float", "not bytes"],
)
def test_bad_ram_raises(ram: np.ndarray) -> None:
    with pytest.raises(ValueError, match="ram must"):
        object_positions("Pong", ram)


def test_empty_ram_gives_empty_positions() -> None:
    positions = object_positions("Seaquest", np.zeros((0, 128), dtype=np.uint8))
    assert all(p.shape == (0, 2) for p in positions.values())
