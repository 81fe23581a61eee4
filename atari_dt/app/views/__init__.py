"""The app's pages, one module each, every one a ``render(state)`` of the chosen state."""
