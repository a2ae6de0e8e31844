"""PNG figures for results: score histograms and log-log ROC curves (docs/design.md §5).

Each function writes one file, closes its figure (sweeps draw many) and returns the path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: jobs run on cluster nodes without a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

FPR_MIN = 1e-4  # left edge of the log-log ROC; zeros are clipped here to stay on the axis


def save(fig, path):
    """Write `fig` to `path`, making its folder, and close it; the report's figures end here too."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def score_histogram(member_scores, nonmember_scores, path, title):
    """Overlaid member / non-member histograms on shared bins."""
    m = np.asarray(member_scores, dtype=np.float64).ravel()
    n = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    bins = np.histogram_bin_edges(np.r_[m, n], bins=50)  # shared, so bar heights compare
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(m, bins=bins, alpha=0.5, label=f"members (n={m.size})")
    ax.hist(n, bins=bins, alpha=0.5, label=f"non-members (n={n.size})")
    ax.set(xlabel="score", ylabel="count", title=title)
    ax.legend()
    return save(fig, path)


def roc_loglog(curves, path, title):
    """Log-log ROC curves, one per label ({label: (fpr, tpr)}), with the chance diagonal."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.clip(fpr, FPR_MIN, 1), np.clip(tpr, FPR_MIN, 1), label=label)
    ax.plot([FPR_MIN, 1], [FPR_MIN, 1], "k--", lw=0.8, label="chance")
    ax.set(
        xscale="log",
        yscale="log",
        xlim=(FPR_MIN, 1),
        ylim=(FPR_MIN, 1),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
    )
    ax.legend(loc="lower right")
    return save(fig, path)


def training_loss(steps, loss, path, title):
    """The training loss against the optimizer step."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        np.asarray(steps),
        np.asarray(loss, dtype=np.float64),
        marker="." if len(steps) < 50 else None,
    )
    ax.set(xlabel="step", ylabel="training loss", title=title)
    return save(fig, path)
