"""The app (``atari-dt app``) on a tiny real run: each page's logic with Streamlit's AppTest,
then the served app in a real headless Chromium (every page opened, the RTG slider moved)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from commands import atari_dt
from pages import CHROMIUM

pytest.importorskip("streamlit", reason="the app's extra (pip install -e .[app]) is missing")
from streamlit.testing.v1 import AppTest

from atari_dt.app import RUNS_ENV, session
from atari_dt.app.views.scan import rtg_key

MAIN = Path(__file__).resolve().parents[1] / "atari_dt" / "app" / "main.py"
PAGES = ("run", "episode", "rtg-scan", "attribution", "heads")


def app_on(runs: list[Path | str], monkeypatch: pytest.MonkeyPatch, **query: str) -> AppTest:
    """The app started with ``runs``, its first script run done (``query``: URL parameters)."""
    monkeypatch.setenv(RUNS_ENV, json.dumps([str(r) for r in runs]))
    at = AppTest.from_file(str(MAIN), default_timeout=300)
    at.query_params.update(query)
    return at.run()


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def policy(at: AppTest) -> dict[str, float]:
    """The probability table on the page: action label -> probability (as shown)."""
    table = at.table[0].value
    return {
        str(label): float(p) for label, p in zip(table.index, table["probability"], strict=True)
    }


# ----------------------------------------------------------------------------- page logic


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_an_exception(mixture_run, monkeypatch, page: str) -> None:
    at = app_on([mixture_run], monkeypatch, page=page)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert at.header, "the page draws nothing"


def test_the_run_page_shows_the_run(mixture_run, monkeypatch) -> None:
    at = app_on([mixture_run], monkeypatch, page="run")
    assert at.header[0].value.startswith("Seaquest")
    step = next(m for m in at.metric if m.label == "model step")
    assert step.value == "40"  # the mixture run trains 40 steps (tests/study_runs.py)
    # no sweep and no study yet: the page says which command writes them
    infos = " ".join(i.value for i in at.info)
    assert "atari-dt eval" in infos and "atari-dt study" in infos


def test_episode_page_shows_the_models_policy_at_the_data_rtg(mixture_run, monkeypatch) -> None:
    """The table is the library's ``decision_at_rtg`` at the context's own RTG, to the 4
    decimals shown; the step buttons move the sidebar's step."""
    import atari_dt as adt
    from atari_dt.analysis.rtg_point import decision_at_rtg

    at = app_on([mixture_run], monkeypatch, page="episode", episode="1", step="20")
    no_exception(at)
    shown = policy(at)
    with adt.load_run(mixture_run) as run:
        expected = decision_at_rtg(run.model, run.contexts(1, 20)).probabilities.numpy()
        names = [label.split(" (")[0] for label in shown]
        assert len(shown) == run.model.cfg.n_actions
    for label, p in shown.items():
        action = int(label.split()[0])
        assert p == pytest.approx(expected[action], abs=5e-5)  # rounding to 4 decimals
    assert sum(shown.values()) == pytest.approx(1.0, abs=len(names) * 5e-5)
    next(b for b in at.button if b.label == "1 >").click().run()
    assert at.header[0].value.startswith("Episode 1, step 21 of")
    assert at.query_params["step"] in ("21", ["21"])  # the URL follows the widgets


def test_the_rtg_slider_changes_the_policy(mixture_run, monkeypatch) -> None:
    """Moving the slider re-asks the same state: the table follows ``decision_at_rtg`` at the
    slider's value (a trained model's RTG embedding is not constant, so the policy moves)."""
    import atari_dt as adt
    from atari_dt.analysis.rtg_point import decision_at_rtg

    at = app_on([mixture_run], monkeypatch, page="rtg-scan")
    no_exception(at)
    slider = at.slider(key=rtg_key(str(mixture_run)))
    seen = {}
    for value in (slider.min, slider.max):
        at.slider(key=rtg_key(str(mixture_run))).set_value(value).run()
        no_exception(at)
        seen[value] = policy(at)
    low, high = seen.values()
    assert low != high
    with adt.load_run(mixture_run) as run:
        ctx = run.contexts(0, 50)
        expected = decision_at_rtg(run.model, ctx, slider.max).probabilities.numpy()
    for label, p in high.items():
        assert p == pytest.approx(expected[int(label.split()[0])], abs=5e-5)
    assert "outside the data's range" in " ".join(m.value for m in at.markdown)


def test_attribution_page_shows_both_returns_and_the_delta(mixture_run, monkeypatch) -> None:
    """Two explanations of one action at RTG A and B; IG reports its completeness delta, a
    method without one (occlusion) says n/a."""
    at = app_on([mixture_run], monkeypatch, page="attribution")
    no_exception(at)
    returns = [s.value for s in at.subheader if s.value.startswith("RTG ")]
    assert len(returns) == 2 and returns[0] != returns[1]
    deltas = [m.value for m in at.metric if m.label == "convergence delta"]
    assert len(deltas) == 2 and "n/a" not in deltas
    at.selectbox[0].set_value("occlusion")
    next(b for b in at.button if b.label == "Attribute").click().run()
    no_exception(at)
    assert [m.value for m in at.metric if m.label == "convergence delta"] == ["n/a", "n/a"]


def test_bad_input_is_a_message_not_a_traceback(mixture_run, tmp_path, monkeypatch) -> None:
    def errors(**query: str) -> str:
        at = app_on([mixture_run], monkeypatch, **query)
        no_exception(at)
        return " ".join(e.value for e in at.error)

    assert "episode 1000000 is not there: there are" in errors(page="episode", episode="1000000")
    assert "step 1000000 is not there" in errors(page="episode", episode="0", step="1000000")
    assert "is not a whole number" in errors(episode="three")
    messages = errors(page="no-such-page", run="7")
    assert (
        "no page `no-such-page`" in messages and "run 7 is not there: there are 1 runs" in messages
    )
    # a value from the URL is quoted as code, never drawn as Markdown (a link, an image)
    link = "[log in again](https://example.invalid/login)"
    assert f"no page `{link}`" in errors(page=link)
    # a newline would end the code span and start a heading or a paragraph: folded into one line
    assert f"no page `x # {link}`" in errors(page=f"x\n# {link}")
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    at = app_on([not_a_run], monkeypatch)
    no_exception(at)
    assert any("cannot be opened as a run" in e.value for e in at.error)
    monkeypatch.delenv(RUNS_ENV)
    at = AppTest.from_file(str(MAIN), default_timeout=60).run()
    no_exception(at)
    assert any("atari-dt app RUN" in e.value for e in at.error)


def test_sidebar_choices_follow_every_click(mixture_run, breakout_run, monkeypatch) -> None:
    """Each page click lands (the widgets keep their identity across reruns); each run keeps
    its own episode; a page's widget keeps its value when another page is shown."""
    at = app_on([mixture_run, breakout_run], monkeypatch, episode="2")
    for page, header in [("episode", "Episode"), ("heads", "Heads"), ("run", "Seaquest")]:
        at.sidebar.radio[0].set_value(page).run()
        no_exception(at)
        assert at.header[0].value.startswith(header), (page, at.header[0].value)
    at.sidebar.radio[0].set_value("episode").run()
    assert at.header[0].value.startswith("Episode 2,")
    at.sidebar.selectbox[0].set_value(1).run()  # Breakout: its own episode, no stale error
    no_exception(at)
    assert not at.error and at.header[0].value.startswith("Episode 0,")
    at.sidebar.selectbox[0].set_value(0).run()
    assert at.header[0].value.startswith("Episode 2,")  # Seaquest's choice was kept
    at.sidebar.radio[0].set_value("rtg-scan").run()
    key = rtg_key(str(mixture_run))
    at.slider(key=key).set_value(at.slider(key=key).max).run()
    at.sidebar.radio[0].set_value("episode").run()
    at.sidebar.radio[0].set_value("rtg-scan").run()
    assert at.slider(key=key).value == at.slider(key=key).max
    at.sidebar.radio[0].set_value("attribution").run()
    at.selectbox[0].set_value("occlusion")
    next(b for b in at.button if b.label == "Attribute").click().run()
    at.sidebar.radio[0].set_value("episode").run()
    at.sidebar.radio[0].set_value("attribution").run()
    no_exception(at)
    assert at.selectbox[0].value == "occlusion"  # the form kept its submitted method


def test_sessions_share_the_model_safely(mixture_run) -> None:
    """Two sessions' threads at once (hooks added and removed on the one shared model) give
    what one thread alone gives: the app holds a lock per run around every model call.
    (Without the lock this fails: hooks of one thread fire in the other's forward pass.)"""
    import threading

    import torch

    run_dir = str(mixture_run)
    session.decision.clear()
    args = [(run_dir, 0, 10 + i % 20, 7.0 * i, "constant", None) for i in range(40)]
    failures: list[BaseException] = []
    results: dict[tuple, torch.Tensor] = {}
    deciding = threading.Event()

    def decide() -> None:
        try:
            for a in args:
                results[a] = session.decision(*a).probabilities
        except BaseException as err:  # any failure is what the test reports
            failures.append(err)
        finally:
            deciding.set()

    def patch() -> None:
        step = 10
        while not deciding.is_set():
            session.patching.clear()
            try:
                session.patching(run_dir, 0, step, 0.0, 1000.0, 0, 1)
            except BaseException as err:  # NothingToRestore is an answer, not a failure
                if type(err).__name__ != "NothingToRestore":
                    failures.append(err)
            step = 10 + (step + 1) % 20

    threads = [threading.Thread(target=decide), threading.Thread(target=patch)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]
    session.decision.clear()
    for a in args:  # recomputed alone, in one thread: the same numbers
        assert torch.equal(results[a], session.decision(*a).probabilities), a


def test_the_command_refuses_what_is_not_a_run(mixture_run, tmp_path, capsys) -> None:
    """Checked before a server starts: the error names the directory or the setting."""
    assert atari_dt(f"app {tmp_path}") == 2
    assert f"{tmp_path} is not a training run" in capsys.readouterr().err
    assert atari_dt(f"app {mixture_run} --port 0") == 2
    assert "--port must be 1..65535, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a real browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_app(mixture_run):
    """``atari-dt app`` serving the tiny run on a free local port (stopped afterwards)."""
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "atari_dt", "app", str(mixture_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.time() > deadline:
            output = server.stdout.read().decode(errors="replace") if server.stdout else ""
            server.kill()
            raise AssertionError(f"the app did not start:\n{output[-3000:]}")
        time.sleep(0.5)
    yield url
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def _settled(page) -> None:
    """Wait until Streamlit has finished running the script (its status widget is gone)."""
    page.wait_for_selector("[data-testid=stApp]", timeout=120_000)
    for _ in range(2):  # the widget may appear just after the first check
        page.wait_for_timeout(500)
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000
        )


def _table_text(page) -> str:
    return page.locator("[data-testid=stTable]").first.inner_text()


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian's chromium package)")
def test_every_page_in_a_real_browser(served_app, tmp_path) -> None:
    """Open every page in headless Chromium: no exception shown, a non-blank screenshot of
    each; on the RTG scan page, moving the slider to its end changes the probabilities."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        for name in PAGES:
            page.goto(f"{served_app}/?page={name}")
            _settled(page)
            exceptions = page.locator("[data-testid=stException]")
            assert exceptions.count() == 0, exceptions.first.inner_text()
            shot = tmp_path / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert np.asarray(Image.open(shot).convert("L")).std() > 5  # not a blank page
        page.goto(f"{served_app}/?page=rtg-scan")
        _settled(page)
        before = _table_text(page)
        slider = page.get_by_role("slider", name="Return-to-go asked for")
        assert float(slider.get_attribute("value")) < float(slider.get_attribute("max"))
        slider.focus()
        page.keyboard.press("End")
        _settled(page)
        page.wait_for_function(
            "(before) => document.querySelector('[data-testid=stTable]').innerText !== before",
            arg=before,
            timeout=60_000,
        )
        assert _table_text(page) != before
        assert float(slider.get_attribute("value")) == float(slider.get_attribute("max"))
        page.screenshot(path=str(tmp_path / "rtg-scan-moved.png"), full_page=True)
        browser.close()
