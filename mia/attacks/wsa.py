"""WSA, the weakly supervised attack (Ko et al. 2023, DESIGN §4), in its two published variants.

1. mu, sigma = mean and sample std of the cosines of the known non-members D_no;
2. pseudo-members = the pairs of the unlabelled pool D_all with cos >= mu + lam * sigma;
3. a classifier learns D_no (label 0) against the pseudo-members (label 1);
4. score = P(member) of each evaluation pair.

variant=ko    (reds-lab/CLIP-MIA): input [f_img, f_txt]; MLP d-512-256-128-2 with ReLU, cross-entropy,
              Adam lr 1e-3, batch 32, <= 15 epochs, 90/10 validation split, early stopping on the
              validation loss (patience 3, last weights kept, as in their code); both classes
              subsampled to the smaller one. Their code's default lam is 1.5, the paper recommends 0.5.
variant=gomez (lluisgomez/CLIP-MIA-Bench): input [f_img, f_txt, cos]; one logistic layer, BCE,
              AdamW lr 1e-3, batch 1024, 5 epochs, no balancing, lam 0.5. Note: 5 epochs of batch
              1024 is only 5 * ceil(n / 1024) optimiser steps, so with a few thousand training pairs
              the layer barely moves from its random init (raise `gomez.epochs` for small pools).

`pseudo_label`, `feature_matrix` and `labelled_training_set` are shared with CLMIA (mia/attacks/clmia.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.sizes import parse_size

EVALUATED = ("member_eval", "nonmember_eval")

# Each variant's published inputs, and training settings (the yaml overrides them key by key).
FEATURES = {"ko": ["image", "text"], "gomez": ["image", "text", "cos"]}
VARIANTS = {
    "ko": {"hidden": [512, 256, 128], "lr": 1e-3, "batch_size": 32, "max_epochs": 15, "val_fraction": 0.1,
           "patience": 3, "balance": True},
    "gomez": {"lr": 1e-3, "weight_decay": 0.01, "batch_size": 1024, "epochs": 5},
}


# ----------------------------------------------------------------------------- pseudo-labels

@dataclass
class PseudoLabels:
    """Which pairs the attacker labels: indices into nonmember_known (0) and into aux_pool (1)."""
    known: np.ndarray      # rows of nonmember_known used as D_no
    members: np.ndarray    # rows of aux_pool with cos >= threshold
    lam: float
    mu: float
    sigma: float

    @property
    def threshold(self) -> float:
        return self.mu + self.lam * self.sigma


def pseudo_label(ctx: AttackContext, lam: float, known_size=None, param="attack.wsa.lam") -> PseudoLabels:
    """Eq. 2 of Ko et al.: D_no = the first `known_size` known non-members (nested, like data.size;
    None = all; 500 or "1k"); pseudo-members = aux_pool pairs whose cosine reaches mu + lam * sigma of D_no."""
    known_cos = ctx.features["nonmember_known"].cos
    size_key = param.rsplit(".", 1)[0] + ".known_size"
    n_known = len(known_cos) if known_size is None else parse_size(known_size, size_key)
    if not 2 <= n_known <= len(known_cos):
        raise ValueError(f"{size_key}={known_size}: need 2 to {len(known_cos)} known non-members")
    known = np.arange(n_known)
    mu, sigma = float(known_cos[known].mean()), float(known_cos[known].std(ddof=1))
    pl = PseudoLabels(known, np.flatnonzero(ctx.features["aux_pool"].cos >= mu + lam * sigma), float(lam), mu, sigma)
    if len(pl.members) == 0:
        raise ValueError(f"no aux_pool pair reaches cos >= mu + lam * sigma = {pl.threshold:.4f} "
                         f"(mu {mu:.4f}, sigma {sigma:.4f}, max aux cos {ctx.features['aux_pool'].cos.max():.4f}): "
                         f"no pseudo-members to train on; lower {param} (now {lam})")
    return pl


def pseudo_label_diagnostics(ctx: AttackContext, pl: PseudoLabels) -> dict:
    """Pseudo-label statistics; `aux_is_member` (ground truth) is read here only, never for scoring."""
    truth = np.asarray(ctx.splits.aux_is_member, dtype=bool)
    picked = truth[pl.members]
    return {"lam": pl.lam, "mu": pl.mu, "sigma": pl.sigma, "threshold": pl.threshold,
            "n_known": int(len(pl.known)), "n_aux": int(len(truth)), "n_pseudo_members": int(len(pl.members)),
            "pseudo_member_false_share": float(1 - picked.mean()),
            "pseudo_member_recall": float(picked.sum() / max(truth.sum(), 1))}


# ----------------------------------------------------------------------------- features

def feature_matrix(sf, features) -> np.ndarray:
    """Columns of one set's SplitFeatures: image, text, product (f_img * f_txt) and/or cos."""
    columns = {"image": lambda: sf.image, "text": lambda: sf.text, "product": lambda: sf.image * sf.text,
               "cos": lambda: sf.cos[:, None]}
    unknown = set(features) - set(columns)
    if unknown:
        raise ValueError(f"features {sorted(unknown)} unknown: choose from {list(columns)}")
    return np.concatenate([columns[f]() for f in features], axis=1).astype(np.float32)


def labelled_training_set(ctx: AttackContext, pl: PseudoLabels, features):
    """(X, y, uids): D_no labelled 0, pseudo-members labelled 1. Refuses any evaluation uid, so no
    evaluated pair can ever be trained on (DESIGN §4)."""
    known, aux = ctx.features["nonmember_known"], ctx.features["aux_pool"]
    uids = np.concatenate([known.uids[pl.known], aux.uids[pl.members]])
    leaked = np.isin(uids, np.concatenate([ctx.features[s].uids for s in EVALUATED]))
    if leaked.any():
        raise ValueError(f"{int(leaked.sum())} evaluation uids are in D_no / aux_pool (e.g. {list(uids[leaked][:3])})")
    x = np.concatenate([feature_matrix(known, features)[pl.known], feature_matrix(aux, features)[pl.members]])
    y = np.r_[np.zeros(len(pl.known)), np.ones(len(pl.members))].astype(np.int64)
    return x, y, uids


# ----------------------------------------------------------------------------- classifiers

def _batches(n, batch_size, g):
    order = torch.randperm(n, generator=g)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def mlp(sizes) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train_ko(x, y, g, hidden, lr, batch_size, max_epochs, val_fraction, patience, balance):
    """Ko et al.'s attack MLP. Returns (model whose logits' softmax[:, 1] is P(member), info)."""
    if balance:  # subsample both classes to the smaller one, as their code does
        m = min((y == 0).sum(), (y == 1).sum())
        keep = np.concatenate([idx[torch.randperm(len(idx), generator=g)[:m].numpy()]
                               for idx in (np.flatnonzero(y == 0), np.flatnonzero(y == 1))])
        x, y = x[keep], y[keep]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.randperm(len(y), generator=g)
    n_train = int((1 - val_fraction) * len(y))
    tr, va = order[:n_train], order[n_train:]
    model, loss_fn = mlp([x.shape[1], *list(hidden), 2]), nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, stale, epochs, val_loss = float("inf"), 0, 0, float("nan")
    for epochs in range(1, max_epochs + 1):
        model.train()
        for b in _batches(len(tr), batch_size, g):
            opt.zero_grad()
            loss_fn(model(x[tr[b]]), y[tr[b]]).backward()
            opt.step()
        if len(va) == 0:
            continue
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x[va]), y[va]).item()
        best, stale = (val_loss, 0) if val_loss < best else (best, stale + 1)
        if stale >= patience:
            break
    return model, {"epochs": epochs, "n_train": int(len(tr)), "n_val": int(len(va)), "val_loss": val_loss}


class _Logistic(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.linear = nn.Linear(d, 1)

    def forward(self, x):  # two logits [0, z], so softmax[:, 1] = sigmoid(z), like the MLP's output
        z = self.linear(x)
        return torch.cat([torch.zeros_like(z), z], dim=1)


def train_gomez(x, y, g, lr, weight_decay, batch_size, epochs):
    """Gomez's logistic layer, trained on all labelled pairs (no balancing, no validation)."""
    x, y = torch.from_numpy(x), torch.from_numpy(y).float()
    model, loss_fn = _Logistic(x.shape[1]), nn.BCEWithLogitsLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    for _ in range(epochs):
        for b in _batches(len(y), batch_size, g):
            opt.zero_grad()
            loss_fn(model(x[b])[:, 1], y[b]).backward()
            opt.step()
    return model, {"epochs": epochs, "n_train": int(len(y))}


@torch.no_grad()
def p_member(model, x: np.ndarray) -> np.ndarray:
    """softmax(logits)[:, 1] in float64, so that confident scores do not tie at 1.0."""
    model.eval()
    return torch.softmax(model(torch.from_numpy(x)).double(), dim=1)[:, 1].numpy()


# ----------------------------------------------------------------------------- attack

class WSA(Attack):
    name = "wsa"

    def __init__(self, variant: str = "ko", lam: float = 0.5, known_size=None, features=None,
                 ko: dict | None = None, gomez: dict | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"attack.wsa.variant={variant!r}: choose one of {list(VARIANTS)}")
        self.variant, self.lam, self.known_size = variant, float(lam), known_size
        given = dict({"ko": ko, "gomez": gomez}[variant] or {})
        unknown = set(given) - set(VARIANTS[variant])
        if unknown:
            raise ValueError(f"attack.wsa.{variant}: unknown keys {sorted(unknown)}; known: {list(VARIANTS[variant])}")
        self.settings = {**VARIANTS[variant], **given}
        self.features = list(features or FEATURES[variant])

    def training_set(self, ctx: AttackContext):
        """(X, y, uids, PseudoLabels) the classifier learns from; never holds an evaluation uid."""
        pl = pseudo_label(ctx, self.lam, self.known_size, param="attack.wsa.lam")
        return (*labelled_training_set(ctx, pl, self.features), pl)

    def run(self, ctx: AttackContext) -> AttackResult:
        x, y, _, pl = self.training_set(ctx)
        with torch.random.fork_rng(devices=[]):  # seeds the init without touching the caller's torch RNG
            torch.manual_seed(ctx.seed)
            g = torch.Generator().manual_seed(ctx.seed)
            train = train_ko if self.variant == "ko" else train_gomez
            model, info = train(x, y, g, **self.settings)
        scores = [p_member(model, feature_matrix(ctx.features[s], self.features)) for s in EVALUATED]
        diagnostics = {"variant": self.variant, "features": self.features, "n_inputs": int(x.shape[1]),
                       **pseudo_label_diagnostics(ctx, pl), **info}
        return AttackResult(scores[0], scores[1], diagnostics)
