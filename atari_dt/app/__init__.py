"""The interactive app (``atari-dt app RUN ...``, Streamlit): a trained run's episodes, RTG scan,
attribution and heads in the browser.

``main.py`` is the script Streamlit runs; ``session`` holds what one browser session shares (the
runs it may open, the chosen run and state, cached library results); ``views/`` has one module
per page. Every number shown comes from the library's analysis and attribution functions; the
app only chooses inputs and presents results. Streamlit is an optional extra
(``pip install -e .[app]``), imported only here.
"""

RUNS_ENV = "ATARI_DT_APP_RUNS"
"""JSON list of the run directories the app may open (set by ``atari-dt app``)."""
