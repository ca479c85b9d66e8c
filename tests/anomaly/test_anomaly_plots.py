"""The ROC / SIC comparison figure writes a PNG from either kind of per-run curve."""

from __future__ import annotations

import numpy as np
import pytest

from flowctl.metrics.sic import roc_curve
from flowctl.plots.anomaly import roc_sic_figure, save


def test_roc_sic_figure_writes_png(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(5000), np.ones(500)]

    def scores(shift: float) -> np.ndarray:
        return np.r_[rng.standard_normal(5000), shift + rng.standard_normal(500)]

    curves = {
        "supervised": [(y, scores(2.0)) for _ in range(3)],                # (labels, scores)
        "cwola": [roc_curve(y, scores(1.0))[:2] for _ in range(3)],        # (fpr, tpr)
        "single": [(y, scores(1.5))],
    }
    fig = roc_sic_figure(curves, fpr_floor=1e-3, n_grid=200, title="toy")
    ax_r, ax_s = fig.axes[:2]
    assert ax_r.get_yscale() == "log"
    labels = [t.get_text() for t in ax_s.get_legend().get_texts()]
    assert labels[0].startswith("supervised (max SIC ") and "3 runs" in labels[0]
    assert "1 run)" in labels[2] and labels[-1] == "random"
    # the supervised median SIC beats the CWoLa-like one
    sup, cw = (float(s.split("max SIC ")[1].split(",")[0]) for s in labels[:2])
    assert sup > cw > 1.0
    path = save(fig, tmp_path / "plots" / "roc_sic.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="at least one method"):
        roc_sic_figure({})
