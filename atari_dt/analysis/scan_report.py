"""The RTG scan with what explains it: the scan itself, where the policy saturates, how much
the decision attends to the RTG tokens, and the direct logit attribution of the reference
action along the grid. ``atari-dt scan`` renders the ``ScanReport`` and nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from atari_dt.analysis.attention import attention_to_rtg
from atari_dt.analysis.dla import ScanAttribution, dla_along_scan
from atari_dt.analysis.saturation import Saturation, saturation
from atari_dt.analysis.scan import RtgScan, ScanMode, rtg_scan
from atari_dt.datasets.contexts import Contexts


@dataclass(frozen=True)
class ScanReport:
    """``scan`` (``rtg_scan``), its ``saturation``, ``attention_to_rtg`` ``[G, n_layers,
    n_heads]`` (from the last state token to all RTG tokens) and ``dla`` of
    ``scan.reference_action`` along the grid; over ``contexts`` windows."""

    scan: RtgScan
    saturation: Saturation
    attention_to_rtg: Float[torch.Tensor, "G L H"]
    dla: ScanAttribution
    contexts: int


def scan_report(
    model: Any,
    contexts: Contexts,
    rtg_grid: np.ndarray | list[float],
    *,
    mode: ScanMode = "constant",
    reference_rtg: float | None = None,
    data_returns: np.ndarray | None = None,
) -> ScanReport:
    """The scan of ``contexts`` over ``rtg_grid`` and what explains it (arguments as
    ``rtg_scan``); the frames are encoded once for all four.

    Raises:
        UserError: a behaviour-cloning model, or a bad grid (see ``rtg_scan``).
    """
    model.eval()
    contexts = contexts.encoded(model)  # every analysis below reruns these frames per grid RTG
    scan = rtg_scan(
        model, contexts, rtg_grid, mode=mode, data_returns=data_returns, reference_rtg=reference_rtg
    )
    return ScanReport(
        scan=scan,
        saturation=saturation(model, scan),
        attention_to_rtg=attention_to_rtg(model, contexts, scan.rtg, mode),
        dla=dla_along_scan(model, contexts, scan.rtg, scan.reference_action, mode=mode),
        contexts=len(contexts),
    )
