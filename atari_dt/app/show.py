"""How the app draws what the library returns: frames, probability tables, figures. Nothing
here computes a result; it formats and lays out."""

from __future__ import annotations

from typing import Any

import numpy as np
import streamlit as st


@st.cache_data(max_entries=16, show_spinner=False)
def action_names(game: str, n_actions: int) -> list[str]:
    """``"3 RIGHT"``-style labels of the game's minimal action set (indices only when the
    game's action set does not have ``n_actions`` actions, e.g. a model with the full 18)."""
    from atari_dt.study.imitation import action_meanings

    try:
        meanings = action_meanings(game)
    except Exception:  # an unknown game: the model's actions are still numbered
        meanings = ()
    if len(meanings) != n_actions:
        return [str(a) for a in range(n_actions)]
    return [f"{a} {name}" for a, name in enumerate(meanings)]


def frame_stack(frames: np.ndarray, *, scale: int = 3) -> None:
    """One stack of 84x84 uint8 frames ``[S, H, W]`` in a row, oldest first, enlarged."""
    S = len(frames)
    for column, i in zip(st.columns(S), range(S), strict=True):
        big = np.kron(frames[i], np.ones((scale, scale), dtype=np.uint8))  # nearest, crisp
        column.image(big, caption="t" if i == S - 1 else f"t-{S - 1 - i}", width="stretch")


def probability_table(
    probabilities: Any, names: list[str], *, marked: int | None = None, mark: str = "explained"
) -> None:
    """The policy as a table (text in the page, so it can be read and compared), most likely
    first, the ``marked`` action flagged with ``mark``."""
    import pandas as pd

    values = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-values, kind="stable")
    rows = [
        {
            "action": names[a] + (f" ({mark})" if a == marked else ""),
            "probability": f"{values[a]:.4f}",
        }
        for a in order
    ]
    st.table(pd.DataFrame(rows).set_index("action"))


def probability_bars(probabilities: Any, names: list[str]) -> None:
    """The policy as bars, in action order."""
    import pandas as pd

    frame = pd.DataFrame({"action": names, "probability": np.asarray(probabilities, dtype=float)})
    st.bar_chart(frame, x="action", y="probability", height=220)


def grouped_bars(values: Any, *, rows: str, columns: str, value: str, height: int = 220) -> None:
    """A matrix ``[R, C]`` (e.g. layer x head) as bars grouped by row, drawn in the browser
    (Vega-Lite: cheap to redraw when a slider moves)."""
    import altair as alt
    import pandas as pd

    matrix = np.asarray(values, dtype=np.float64)
    frame = pd.DataFrame(
        [
            {rows: str(r), columns: str(c), value: float(matrix[r, c])}
            for r in range(matrix.shape[0])
            for c in range(matrix.shape[1])
        ]
    )
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X(f"{columns}:N", title=columns),
            xOffset=alt.XOffset(f"{rows}:N"),
            y=alt.Y(f"{value}:Q", title=value),
            color=alt.Color(f"{rows}:N", title=rows),
            tooltip=[rows, columns, alt.Tooltip(value, format=".4f")],
        )
        .properties(height=height)
    )
    st.altair_chart(chart, width="stretch")


def component_bars(values: Any, labels: list[str], *, value: str, height: int = 260) -> None:
    """Signed bars in the given order (e.g. direct logit attribution per component)."""
    import altair as alt
    import pandas as pd

    frame = pd.DataFrame({"component": labels, value: np.asarray(values, dtype=np.float64)})
    chart = (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("component:N", sort=list(labels), title=None),
            y=alt.Y(f"{value}:Q", title=value),
            color=alt.condition(
                f"datum['{value}'] >= 0", alt.value("#cc6677"), alt.value("#4477aa")
            ),
            tooltip=["component", alt.Tooltip(value, format=".4f")],
        )
        .properties(height=height)
    )
    st.altair_chart(chart, width="stretch")


def range_strip(
    low: float, high: float, marks: Any, value: float, *, units: str, height: int = 110
) -> None:
    """Where ``value`` (a red line) lies on the slider's ``[low, high]`` against the store's
    returns (light) and the training returns (dark, drawn over them)."""
    import altair as alt
    import pandas as pd

    spans = pd.DataFrame(
        [
            {"from": marks.data_min, "to": marks.data_max, "returns": "in the store"},
            {"from": marks.data_min, "to": marks.train_max, "returns": "trained on"},
        ]
    )
    x = alt.X("from:Q", scale=alt.Scale(domain=[low, high]), title=f"return-to-go ({units})")
    colours = alt.Scale(domain=["in the store", "trained on"], range=["#c6d4e6", "#4477aa"])
    bars = (
        alt.Chart(spans)
        .mark_bar(height=16)
        .encode(
            x=x,
            x2="to:Q",
            color=alt.Color(
                "returns:N", scale=colours, legend=alt.Legend(orient="top", title=None)
            ),
        )
    )
    asked = (
        alt.Chart(pd.DataFrame({"from": [value]}))
        .mark_tick(color="#cc3311", thickness=4, size=28)
        .encode(x=x)
    )
    # Streamlit fits the legend and the axis into this height too
    st.altair_chart((bars + asked).properties(height=height), width="stretch")


def png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes, then closed (for figures cached per input)."""
    import io

    from atari_dt.figures import pyplot

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    pyplot().close(fig)
    return buffer.getvalue()


def figure(fig: Any, *, stretch: bool = False) -> None:
    """A matplotlib figure at its own size (``stretch``: the column's width), then closed
    (figures are drawn anew on every rerun)."""
    from atari_dt.figures import pyplot

    st.pyplot(fig, clear_figure=True, width="stretch" if stretch else "content")
    pyplot().close(fig)


def entry_text(entry: dict[str, Any] | None, digits: int = 3) -> str:
    """A headline entry of a study summary (``value``, ``interval``) as ``v [lo, hi]``."""
    if not entry:
        return "n/a"
    value, interval = entry.get("value"), entry.get("interval")

    def fmt(v: Any) -> str:
        return f"{v:.{digits}g}" if isinstance(v, int | float) else str(v)

    if isinstance(value, dict | list):
        return json_short(value)
    text = fmt(value)
    if isinstance(interval, list | tuple) and len(interval) == 2 and None not in interval:
        text += f" [{fmt(interval[0])}, {fmt(interval[1])}]"
    return text


def json_short(value: Any, limit: int = 120) -> str:
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
