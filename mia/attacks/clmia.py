"""CLMIA (Chen et al. 2024, arXiv 2411.11144) adapted to CLIP: contrastive pre-training of the
attack model on unlabelled pairs, then a small head fine-tuned on a few labelled ones.

Adaptation. CLMIA attacks classifiers: a sample is a shadow model's output, and one input passed
twice through a shadow model with dropout gives a positive pair. A CLIP target has no class outputs
and training shadow CLIPs is what this attack avoids, so a sample here is the target's per-pair
feature vector [f_img, f_txt, f_img * f_txt, cos], and the two dropout masks are drawn inside the
attack encoder instead (dropout on its input and hidden layers, as in SimCSE). The encoder learns by
NT-Xent on every pair an auditor holds without labels (aux_pool, D_no, the evaluation pairs, taken
in uid order, never member_eval first: docs/design.md §4, label-blind scoring); CLMIA's small
labelled set becomes what WSA can label, D_no (0) and pseudo-members (1), for a head on the frozen
encoder.

Settings: temperature 0.05 as in the paper; dropout 0.3 rather than its 0.1: on feature vectors 0.1
makes the two views nearly identical (NT-Xent 0.06 in the first epoch, 0.004 at the end, against
2.0 -> 0.34 at 0.3), and 0.2-0.5 scored better on the test fixtures.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
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
from mia.data.splits import EVAL_SETS, SCORED
from mia.validate import require


def encoder(d_in, dims, dropout) -> nn.Sequential:
    """MLP with dropout on its input and after every hidden ReLU: the source of the two views."""
    layers, d = [nn.Dropout(dropout)], d_in
    for i, width in enumerate(dims):
        layers.append(nn.Linear(d, width))
        if i < len(dims) - 1:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        d = width
    return nn.Sequential(*layers)


def nt_xent(z1, z2, temperature):
    """SimCLR's NT-Xent over 2B views: each view's positive is its twin, the other 2B - 2 are
    negatives."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    n = len(z1)
    twin = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, twin)


def pretrain(enc, x, g, epochs, batch_size, lr, temperature):
    """Contrastive training on unlabelled rows; returns the mean loss of each epoch."""
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    enc.train()
    losses = []
    for _ in range(epochs):
        total = 0.0
        batches = [
            b for b in shuffled_batches(len(x), batch_size, g) if len(b) > 1
        ]  # a lone row has no negatives
        for b in batches:
            opt.zero_grad()
            loss = nt_xent(enc(x[b]), enc(x[b]), temperature)  # two passes = two dropout masks
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        losses.append(total / sum(len(b) for b in batches))
    return losses


class _Frozen(nn.Module):
    """Frozen encoder (eval mode: no dropout) + trainable linear head with two logits."""

    def __init__(self, enc, width):
        super().__init__()
        self.enc, self.head = enc.requires_grad_(False), nn.Linear(width, 2)

    def train(self, mode=True):
        super().train(mode)
        self.enc.eval()
        return self

    def forward(self, x):
        return self.head(self.enc(x))


def fine_tune(model, x, y, epochs, lr):
    """Full-batch cross-entropy with class weights, so a few pseudo-members weigh as much as
    D_no."""
    counts = torch.bincount(y, minlength=2).float()
    loss_fn = nn.CrossEntropyLoss(weight=counts.sum() / (2 * counts))
    opt = torch.optim.Adam(model.head.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return loss.item()


class CLMIA(Attack):
    name = "clmia"
    reads_known_nonmembers = True  # D_no is its classifier's negatives
    uncalibrated = TRAINS_ON_KNOWN

    def __init__(
        self,
        *,
        lam: float,
        known_size,
        features,
        contrastive_sets,
        encoder_dims,
        dropout: float,
        temperature: float,
        epochs: int,
        batch_size: int,
        lr: float,
        head_epochs: int,
        head_lr: float,
    ):
        require(
            set(contrastive_sets) <= set(EVAL_SETS),
            "contrastive_sets",
            list(contrastive_sets),
            f"choose from {list(EVAL_SETS)}",
        )
        require(
            len(set(contrastive_sets) & set(SCORED)) != 1,
            "contrastive_sets",
            list(contrastive_sets),
            f"list both of {list(SCORED)} or neither: an auditor cannot tell them apart "
            "(label-blind scoring)",
        )
        self.lam, self.known_size = float(lam), known_size
        self.features, self.contrastive_sets = list(features), list(contrastive_sets)
        self.encoder_dims, self.dropout, self.temperature = (
            list(encoder_dims),
            float(dropout),
            float(temperature),
        )
        self.epochs, self.batch_size, self.lr = int(epochs), int(batch_size), float(lr)
        self.head_epochs, self.head_lr = int(head_epochs), float(head_lr)

    def run(self, ctx: AttackContext) -> AttackResult:
        pl = pseudo_label(ctx, self.lam, self.known_size)
        x_lab, y_lab, _ = labelled_training_set(ctx, pl, self.features)
        # The pool in uid order: its batches never depend on which evaluation set a pair sits in
        # (docs/design.md §4, label-blind scoring), as they would if member_eval came first.
        by_uid = np.argsort(
            np.concatenate([ctx.uids(s) for s in self.contrastive_sets]), kind="stable"
        )
        x_pool = np.concatenate(
            [feature_matrix(ctx.features[s], self.features) for s in self.contrastive_sets]
        )[by_uid]
        # Standardise with the unlabelled pool's statistics: cos and products are tiny next to the
        # embedding coordinates otherwise, and dropout noise should be on one scale for all columns.
        mean, std = x_pool.mean(0), x_pool.std(0) + 1e-6
        scale = lambda a: torch.from_numpy((a - mean) / std).float()  # noqa: E731
        with seeded(ctx.seed) as g:
            enc = encoder(x_pool.shape[1], self.encoder_dims, self.dropout)
            losses = pretrain(
                enc, scale(x_pool), g, self.epochs, self.batch_size, self.lr, self.temperature
            )
            model = _Frozen(enc, self.encoder_dims[-1])
            head_loss = fine_tune(
                model, scale(x_lab), torch.from_numpy(y_lab), self.head_epochs, self.head_lr
            )
        scores = [
            p_member(model, (feature_matrix(ctx.features[s], self.features) - mean) / std)
            for s in SCORED
        ]
        diagnostics = {
            **pseudo_label_diagnostics(ctx, pl),
            "features": self.features,
            "n_contrastive": int(len(x_pool)),
            "contrastive_loss_first": losses[0] if losses else None,
            "contrastive_loss": losses[-1] if losses else None,
            "head_loss": head_loss,
            "epochs": self.epochs,
        }
        return AttackResult(scores[0], scores[1], diagnostics)
