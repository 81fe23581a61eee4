"""Reading spans of an episode store's datasets with an error that names what is damaged.

h5py reports a corrupted chunk as ``OSError: Can't read data (filter returned failure ...)``
with neither the file nor the rows; the training and analysis readers go through here."""

from __future__ import annotations

from typing import Any

import numpy as np

from atari_dt.errors import StoreFormatError


def read_span(dataset: Any, start: int, stop: int) -> np.ndarray:
    """``dataset[start:stop]``, or a ``StoreFormatError`` naming the file, the dataset and the
    rows when HDF5 cannot read them (a damaged chunk), with the command that locates it."""
    try:
        return dataset[start:stop]
    except OSError as err:
        path = dataset.file.filename
        raise StoreFormatError(
            f"{path}: cannot read {dataset.name}[{start}:{stop}] "
            f"({' '.join(str(err).split())[:120]}); the file is damaged there: "
            f"`atari-dt data verify {path}` lists every damaged part"
        ) from None
