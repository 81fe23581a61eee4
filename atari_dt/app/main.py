"""The app's script, run by Streamlit (``atari-dt app RUN ...`` starts it): the sidebar picks
the run, the page and the state; the page renders it. Bad input (a directory that is not a run,
an episode outside the store) is a message on the page, never a traceback."""

from __future__ import annotations

import streamlit as st

from atari_dt.app import session
from atari_dt.app.views import attribution, episode, heads, run, scan
from atari_dt.errors import UserError

# URL name (?page=rtg-scan) -> page module (comments, not docstrings: the script's bare strings
# would be drawn on the page by Streamlit's "magic")
PAGES = {
    "run": run,
    "episode": episode,
    "rtg-scan": scan,
    "attribution": attribution,
    "heads": heads,
}

# What a user can get wrong here: a run that is not one, a store that moved, an input the
# model or the store does not take. Anything else is a bug and keeps Streamlit's traceback.
USER_ERRORS = (UserError, FileNotFoundError)


def main() -> None:
    st.set_page_config(page_title="atari-dt", layout="wide")
    st.sidebar.title("atari-dt")
    session.keep_widget_values()
    try:
        runs = session.run_dirs()
    except UserError as err:
        st.error(str(err))
        return
    slugs = list(PAGES)
    session.read_url(runs, slugs)
    run_dir = session.choose_run(runs)
    page = st.sidebar.radio(
        "Page", slugs, key=f"{session.KEPT}page", format_func=lambda s: PAGES[s].TITLE
    )
    st.query_params["page"] = page
    try:
        opened = session.open_run(run_dir)
    except USER_ERRORS as err:
        st.error(f"{run_dir} cannot be opened as a run: {err}")
        return
    try:
        state = session.choose_state(run_dir, opened)
        PAGES[page].render(state)
    except USER_ERRORS as err:
        st.error(str(err))


main()
