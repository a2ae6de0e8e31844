"""WSA, the weakly supervised attack (Ko et al. 2023, docs/design.md §4), in its two published
variants.

1. mu, sigma = mean and sample std of the cosines of the known non-members D_no;
2. pseudo-members = the pairs of the unlabelled pool D_all with cos >= mu + lam * sigma;
3. a classifier learns D_no (label 0) against the pseudo-members (label 1);
4. score = P(member) of each evaluation pair.

variant=ko    (reds-lab/CLIP-MIA): input [f_img, f_txt]; MLP d-512-256-128-2 with ReLU,
              cross-entropy, Adam lr 1e-3, batch 32, <= 15 epochs, 90/10 validation split, early
              stopping on the validation loss (patience 3, last weights kept, as in their code);
              both classes subsampled to the smaller one. Their code's default lam is 1.5, the paper
              recommends 0.5. One deviation: the score here is the softmax P(member) of the two
              logits, where Ko's code takes the sigmoid of the member logit alone (a different,
              non-normalised score).
variant=gomez (lluisgomez/CLIP-MIA-Bench): input [f_img, f_txt, cos]; one logistic layer, BCE,
              AdamW lr 1e-3, batch 1024, 5 epochs, no balancing, lam 0.5. Note: 5 epochs of batch
              1024 is only 5 * ceil(n / 1024) optimiser steps, so with a few thousand training pairs
              the layer barely moves from its random init (raise `gomez.epochs` for small pools).

Pseudo-labels and the labelled training set come from mia/attacks/weak_supervision.py (shared with
CLMIA).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch import nn

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.attacks.weak_supervision import (
    TRAINS_ON_KNOWN,
    feature_matrix,
    labelled_training_set,
    p_member,
    pseudo_label,
    pseudo_label_diagnostics,
    seeded,
    shuffled_batches,
)
from mia.data.splits import SCORED
from mia.validate import require

# Each variant's published classifier inputs (`features: null` in the yaml); its training settings
# are the keyword arguments of its trainer below, all set in conf/attack/wsa.yaml / wsa_gomez.yaml.
FEATURES = {"ko": ["image", "text"], "gomez": ["image", "text", "cos"]}


# ----------------------------------------------------------------------------- classifiers


def mlp(sizes) -> nn.Sequential:
    """Linear layers of the given sizes with ReLU between them (none after the last)."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train_ko(x, y, g, hidden, lr, batch_size, max_epochs, val_fraction, patience, balance):
    """Ko et al.'s attack MLP. Returns (model whose logits' softmax[:, 1] is P(member), info)."""
    if balance:  # subsample both classes to the smaller one, as their code does
        m = min((y == 0).sum(), (y == 1).sum())
        keep = np.concatenate(
            [
                idx[torch.randperm(len(idx), generator=g)[:m].numpy()]
                for idx in (np.flatnonzero(y == 0), np.flatnonzero(y == 1))
            ]
        )
        x, y = x[keep], y[keep]
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    order = torch.randperm(len(y), generator=g)
    n_train = int((1 - val_fraction) * len(y))
    tr, va = order[:n_train], order[n_train:]
    model, loss_fn = mlp([x.shape[1], *list(hidden), 2]), nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, stale, epochs, val_loss = float("inf"), 0, 0, float("nan")
    for epoch in range(1, max_epochs + 1):
        epochs = epoch  # reported below: early stopping can end the loop before max_epochs
        model.train()
        for b in shuffled_batches(len(tr), batch_size, g):
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
    return model, {
        "epochs": epochs,
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "val_loss": val_loss,
    }


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
        for b in shuffled_batches(len(y), batch_size, g):
            opt.zero_grad()
            loss_fn(model(x[b])[:, 1], y[b]).backward()
            opt.step()
    return model, {"epochs": epochs, "n_train": int(len(y))}


# ----------------------------------------------------------------------------- attack


class WSA(Attack):
    name = "wsa"
    reads_known_nonmembers = True  # D_no is its classifier's negatives
    uncalibrated = TRAINS_ON_KNOWN

    def __init__(
        self,
        *,
        variant: str,
        lam: float,
        known_size,
        features,
        ko: dict | None = None,
        gomez: dict | None = None,
    ):
        trainers = {"ko": train_ko, "gomez": train_gomez}
        require(variant in trainers, "variant", variant, f"choose one of {list(trainers)}")
        self.variant, self.lam, self.known_size = variant, float(lam), known_size
        self.train = trainers[variant]
        # The variant's settings block must name exactly its trainer's keyword arguments.
        given = dict({"ko": ko, "gomez": gomez}[variant] or {})
        expected = list(inspect.signature(self.train).parameters)[3:]  # after x, y, g
        require(
            set(given) == set(expected),
            variant,
            given,
            f"unknown keys {sorted(set(given) - set(expected))}, "
            f"missing keys {sorted(set(expected) - set(given))}: set exactly {expected}",
        )
        self.settings = given
        self.features = list(features or FEATURES[variant])

    def training_set(self, ctx: AttackContext):
        """(X, y, uids, PseudoLabels) the classifier learns from; never holds an evaluation uid."""
        pl = pseudo_label(ctx, self.lam, self.known_size)
        return (*labelled_training_set(ctx, pl, self.features), pl)

    def run(self, ctx: AttackContext) -> AttackResult:
        x, y, _, pl = self.training_set(ctx)
        with seeded(ctx.seed) as g:
            model, info = self.train(x, y, g, **self.settings)
        scores = [p_member(model, feature_matrix(ctx.features[s], self.features)) for s in SCORED]
        diagnostics = {
            "variant": self.variant,
            "features": self.features,
            "n_inputs": int(x.shape[1]),
            **pseudo_label_diagnostics(ctx, pl),
            **info,
        }
        return AttackResult(scores[0], scores[1], diagnostics)
