"""Weak supervision, shared by the attacks that label pairs without ground truth (Ko et al. 2023,
eq. 2; Gomez's white-box variant): known non-members D_no get label 0, pairs of the unlabelled pool
D_all that look like members get label 1, and a classifier learns the difference.

- `pseudo_label` / `labelled_training_set`: the cosine rule mu + lam * sigma of D_no (wsa, clmia);
- `pseudo_label_scores`: the z-scored (log loss, log gradient norm) rule (gradnorm, paramgrad);
- `seeded` / `shuffled_batches` / `p_member`: training and scoring the torch classifiers (wsa,
  clmia).

No evaluation uid is ever labelled or trained on (docs/design.md §4).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mia.attacks.base import AttackContext, NotApplicable
from mia.data.splits import AUX_POOL, NONMEMBER_KNOWN, SCORED
from mia.sizes import parse_size
from mia.validate import require

GRAD_FEATURES = ("log_loss", "log_grad_norm")


# Attack.uncalibrated of the attacks that train a classifier with labelled_training_set: it labels
# D_no, and a run with D_no in member_eval's place is refused, so they get no calibrated thresholds.
TRAINS_ON_KNOWN = (
    "trains its classifier on D_no and refuses to score a pair it trained on "
    "(mia.attacks.weak_supervision.labelled_training_set)"
)


@dataclass
class PseudoLabels:
    """Which pairs the attacker labels: indices into nonmember_known (0) and into aux_pool (1)."""

    known: np.ndarray  # rows of nonmember_known used as D_no
    members: np.ndarray  # rows of aux_pool with cos >= threshold
    lam: float
    mu: float
    sigma: float

    @property
    def threshold(self) -> float:
        return self.mu + self.lam * self.sigma


def pseudo_label(ctx: AttackContext, lam: float, known_size=None) -> PseudoLabels:
    """Eq. 2 of Ko et al.: D_no = the first `known_size` known non-members (nested, like data.size;
    None = all; 500 or "1k"); pseudo-members = aux_pool pairs whose cosine reaches mu + lam * sigma
    of D_no. Raises NotApplicable where no pair reaches it."""
    known_cos = ctx.features[NONMEMBER_KNOWN].cos
    n_known = len(known_cos) if known_size is None else parse_size(known_size, "known_size")
    require(
        2 <= n_known <= len(known_cos),
        "known_size",
        known_size,
        f"need 2 to {len(known_cos)} known non-members",
    )
    known = np.arange(n_known)
    mu, sigma = float(known_cos[known].mean()), float(known_cos[known].std(ddof=1))
    pl = PseudoLabels(
        known, np.flatnonzero(ctx.features[AUX_POOL].cos >= mu + lam * sigma), float(lam), mu, sigma
    )
    # shift spreads D_no's cosines: a high lam can pass every pair (docs/design.md §6.11)
    if not len(pl.members):
        raise NotApplicable(
            f"lam={lam:g}: no aux_pool pair reaches cos >= mu + lam * sigma = {pl.threshold:.4f} "
            f"(mu {mu:.4f}, sigma {sigma:.4f}, max aux cos "
            f"{ctx.features[AUX_POOL].cos.max():.4f}): no pseudo-members to train on"
        )
    return pl


def pseudo_label_diagnostics(ctx: AttackContext, pl: PseudoLabels) -> dict:
    """Pseudo-label statistics; `aux_is_member` (ground truth) is read here only, never for
    scoring."""
    truth = np.asarray(ctx.splits.aux_is_member, dtype=bool)
    picked = truth[pl.members]
    return {
        "lam": pl.lam,
        "mu": pl.mu,
        "sigma": pl.sigma,
        "threshold": pl.threshold,
        "n_known": int(len(pl.known)),
        "n_aux": int(len(truth)),
        "n_pseudo_members": int(len(pl.members)),
        "pseudo_member_false_share": float(1 - picked.mean()),
        "pseudo_member_recall": float(picked.sum() / max(truth.sum(), 1)),
    }


def feature_matrix(sf, features) -> np.ndarray:
    """Columns of one set's SplitFeatures: image, text, product (f_img * f_txt) and/or cos."""
    columns = {
        "image": lambda: sf.image,
        "text": lambda: sf.text,
        "product": lambda: sf.image * sf.text,
        "cos": lambda: sf.cos[:, None],
    }
    unknown = set(features) - set(columns)
    require(
        not unknown,
        "features",
        list(features),
        f"{sorted(unknown)} unknown: choose from {list(columns)}",
    )
    return np.concatenate([columns[f]() for f in features], axis=1).astype(np.float32)


def labelled_training_set(ctx: AttackContext, pl: PseudoLabels, features):
    """(X, y, uids): D_no labelled 0, pseudo-members labelled 1. Refuses any evaluation uid, so no
    evaluated pair can ever be trained on (docs/design.md §4)."""
    known, aux = ctx.features[NONMEMBER_KNOWN], ctx.features[AUX_POOL]
    uids = np.concatenate([known.uids[pl.known], aux.uids[pl.members]])
    leaked = np.isin(uids, np.concatenate([ctx.features[s].uids for s in SCORED]))
    if leaked.any():
        raise ValueError(
            f"{int(leaked.sum())} evaluation uids are in D_no / aux_pool (e.g. "
            f"{list(uids[leaked][:3])})"
        )
    x = np.concatenate(
        [feature_matrix(known, features)[pl.known], feature_matrix(aux, features)[pl.members]]
    )
    y = np.r_[np.zeros(len(pl.known)), np.ones(len(pl.members))].astype(np.int64)
    return x, y, uids


@contextmanager
def seeded(seed: int):
    """Seed a classifier's init and dropout (torch's global RNG) and yield the generator of its
    batch order; the caller's torch RNG state is restored on exit."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def shuffled_batches(n: int, batch_size: int, g) -> list:
    """Index tensors of one epoch: a permutation of range(n) drawn from `g`, cut into batches."""
    order = torch.randperm(n, generator=g)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


@torch.no_grad()
def p_member(model, x: np.ndarray) -> np.ndarray:
    """softmax(logits)[:, 1] in float64, so that confident scores do not tie at 1.0."""
    model.eval()
    return torch.softmax(model(torch.from_numpy(x)).double(), dim=1)[:, 1].numpy()


def pseudo_label_scores(known, aux, evals, aux_is_member=None, C=1.0):
    """Gomez's weak supervision on per-pair features [n, 2] = (log loss, log grad norm): z-score
    against D_no, pseudo-members = D_all rows with -z_l/2 - z_g/2 > 0, logistic regression with
    D_no = 0 and pseudo-members = 1. Returns (the regression's log-odds of membership for each array
    in `evals`, diagnostics): the ranking of P(member), which would round to a tied 1.0 for pairs
    fitted far better than D_no. `aux_is_member` is ground truth for the diagnostics only."""
    mu, sd = known.mean(0), known.std(0)
    sd = np.where(sd > 0, sd, 1.0)

    def z(x):
        return (x - mu) / sd

    pseudo = -z(aux).mean(1) > 0
    diag = {"n_known": len(known), "n_pseudo_members": int(pseudo.sum()), "n_aux": len(aux)}
    if aux_is_member is not None and pseudo.any():
        diag["pseudo_false_share"] = float(1 - np.asarray(aux_is_member)[pseudo].mean())
    if not pseudo.any():
        # One class only: no regression to fit; fall back to the heuristic score it would threshold.
        diag["fallback"] = "no pseudo-members: score = -z_l/2 - z_g/2"
        return [-z(e).mean(1) for e in evals], diag
    x = np.vstack([z(known), z(aux)[pseudo]])
    y = np.r_[np.zeros(len(known)), np.ones(pseudo.sum())]
    clf = LogisticRegression(C=C, max_iter=1000).fit(x, y)
    diag["coef_z"] = dict(zip(GRAD_FEATURES, map(float, clf.coef_[0]), strict=True))
    diag["intercept"] = float(clf.intercept_[0])
    diag["z_mean"] = dict(zip(GRAD_FEATURES, map(float, mu), strict=True))
    diag["z_std"] = dict(zip(GRAD_FEATURES, map(float, sd), strict=True))
    return [clf.decision_function(z(e)) for e in evals], diag


def feature_means(features: dict) -> dict:
    """{set: {log_loss: mean, log_grad_norm: mean}}: raw (AUC-free) feature means, for
    diagnostics."""
    return {
        name: dict(zip(GRAD_FEATURES, map(float, f.mean(0)), strict=True))
        for name, f in features.items()
    }
