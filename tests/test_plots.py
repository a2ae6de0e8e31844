"""mia/plots.py: each figure is a PNG on disk and its figure is closed."""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from mia import plots


def test_plots_write_png(tmp_path):
    rng = np.random.default_rng(0)
    h = plots.score_histogram(
        rng.normal(1, 1, 100), rng.normal(0, 1, 80), tmp_path / "h.png", "hist"
    )
    labels, scores = (
        np.r_[np.ones(100), np.zeros(80)],
        np.r_[rng.normal(1, 1, 100), rng.normal(0, 1, 80)],
    )
    fpr, tpr, _ = roc_curve(labels, scores)
    r = plots.roc_loglog(
        {"csa": (fpr, tpr), "chance-ish": (fpr, fpr)}, tmp_path / "sub" / "r.png", "roc"
    )
    for p in (h, r):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 1000
    assert plt.get_fignums() == []  # figures closed
