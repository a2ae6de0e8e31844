"""Loss / gradient-norm attack, Gomez's white-box variant (DESIGN §4).

For each pair, two features from the target's L2-normalised embeddings:

    l_k = (CE(row k) + CE(column k)) / 2         symmetric InfoNCE, logits exp(logit_scale) img @ txt.T
    g_k = || d(sum_j l_j) / d(img_k, txt_k) ||   the group loss's gradient w.r.t. the pair's embeddings

Members are fitted better: lower loss and, the softmax being saturated, a smaller gradient. The
features are z-scored against D_no (known non-members); the D_all pairs with -z_l/2 - z_g/2 > 0 are
pseudo-members; a logistic regression (D_no = 0, pseudo-members = 1) on (l, g) gives the score.
It is fitted on the z-scored features (the original fits raw ones: same model up to the L2
penalty, better conditioned).

Two ways to choose the negatives each pair is contrasted with (`negatives`):
- batch: the original. Groups of `batch_size` pairs of ONE set (members only meet members),
  shuffled with the seed. The batch loss is the sum of the per-sample losses, as in the original
  code. Sets are cut into near-equal batches (never one short tail batch whose smaller softmax
  would shift its losses).
- fixed: every pair against the same bank of `bank_size` known non-members: its image vs [its
  text, bank texts] and its text vs [its image, bank images]. The bank is drawn from D_no with the
  seed and left out of the D_no used for z-scoring and training (a bank pair would meet itself).

The embeddings come from the feature store: no tower is re-run, the loss and gradient are a few
matrix products (torch autograd). The helpers below are shared with `paramgrad`.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mia.attacks.base import Attack, AttackContext, AttackResult

FEATURES = ("loss", "grad_norm")


def batch_losses(img, txt, scale):
    """Per-sample symmetric InfoNCE inside one batch: (CE(row k) + CE(column k)) / 2."""
    logits = scale * img @ txt.T
    labels = torch.arange(len(img), device=img.device)
    ce = torch.nn.functional.cross_entropy
    return (ce(logits, labels, reduction="none") + ce(logits.T, labels, reduction="none")) / 2


def bank_losses(img, txt, bank_img, bank_txt, scale):
    """Per-sample symmetric loss of each pair against a fixed bank: image k vs [its text, bank
    texts], text k vs [its image, bank images]. Pair k's loss depends on pair k only, so it also
    works on a single sample (shapes [d] or [n, d])."""
    pos = (img * txt).sum(-1, keepdim=True)
    row = scale * torch.cat([pos, img @ bank_txt.T], -1)
    col = scale * torch.cat([pos, txt @ bank_img.T], -1)
    return (row.logsumexp(-1) - row[..., 0] + col.logsumexp(-1) - col[..., 0]) / 2


def loss_and_grad_norm(img, txt, scale, bank=None):
    """(l [n], g [n]) of one group: the group is one batch when `bank` is None, else each pair
    meets only the bank (bank = (bank_img, bank_txt)). g is the norm of the gradient of the summed
    loss w.r.t. the pair's normalised image and text embeddings, concatenated."""
    img = img.detach().clone().requires_grad_(True)
    txt = txt.detach().clone().requires_grad_(True)
    losses = batch_losses(img, txt, scale) if bank is None else bank_losses(img, txt, *bank, scale)
    g_img, g_txt = torch.autograd.grad(losses.sum(), [img, txt])
    return losses.detach(), torch.cat([g_img, g_txt], 1).norm(dim=1)


def split_known(n_known: int, bank_size: int, seed: int):
    """(bank indices, remaining indices) of D_no: a seeded draw of `bank_size` pairs for the bank."""
    if not 0 < bank_size <= n_known - 2:
        raise ValueError(f"bank_size={bank_size} must be in [1, {n_known - 2}]: D_no has {n_known} pairs "
                         "and at least 2 must stay out of the bank for z-scoring")
    order = np.random.default_rng([seed, 7]).permutation(n_known)
    return np.sort(order[:bank_size]), np.sort(order[bank_size:])


def pseudo_label_scores(known, aux, evals, aux_is_member=None, C=1.0):
    """Gomez's weak supervision on per-pair features [n, 2] = (loss, grad norm): z-score against
    D_no, pseudo-members = D_all rows with -z_l/2 - z_g/2 > 0, logistic regression with D_no = 0 and
    pseudo-members = 1. Returns (P(member) for each array in `evals`, diagnostics).
    `aux_is_member` is ground truth for the diagnostics only."""
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
    diag["coef_z"] = dict(zip(FEATURES, map(float, clf.coef_[0])))
    diag["intercept"] = float(clf.intercept_[0])
    diag["z_mean"] = dict(zip(FEATURES, map(float, mu)))
    diag["z_std"] = dict(zip(FEATURES, map(float, sd)))
    return [clf.predict_proba(z(e))[:, 1] for e in evals], diag


def feature_means(features: dict) -> dict:
    """{set: {loss: mean, grad_norm: mean}}: raw (AUC-free) feature means, for diagnostics."""
    return {name: dict(zip(FEATURES, map(float, f.mean(0)))) for name, f in features.items()}


class GradNorm(Attack):
    name = "gradnorm"

    def __init__(self, negatives: str = "batch", batch_size: int = 64, bank_size: int = 63, C: float = 1.0):
        if negatives not in ("batch", "fixed"):
            raise ValueError(f"negatives={negatives!r}: choose 'batch' or 'fixed'")
        self.negatives, self.batch_size, self.bank_size, self.C = negatives, batch_size, bank_size, C

    def _features(self, img, txt, scale, seed, bank):
        """[n, 2] (loss, grad norm) of one set, in the set's order."""
        img, txt = torch.as_tensor(img, dtype=torch.float32), torch.as_tensor(txt, dtype=torch.float32)
        if bank is not None:  # each pair's loss is independent of the others: one group
            return torch.stack(loss_and_grad_norm(img, txt, scale, bank), 1).numpy()
        out = np.empty((len(img), 2), dtype=np.float32)
        order = np.random.default_rng(seed).permutation(len(img))
        for idx in np.array_split(order, math.ceil(len(img) / self.batch_size)):
            out[idx] = torch.stack(loss_and_grad_norm(img[idx], txt[idx], scale), 1).numpy()
        return out

    def run(self, ctx: AttackContext) -> AttackResult:
        scale = float(ctx.target.model.logit_scale.detach().exp())
        known = ctx.features["nonmember_known"]
        keep, bank = np.arange(len(known.uids)), None
        if self.negatives == "fixed":
            bank_idx, keep = split_known(len(known.uids), self.bank_size, ctx.seed)
            bank = (torch.as_tensor(known.image[bank_idx]), torch.as_tensor(known.text[bank_idx]))
        sets = {"nonmember_known": keep, "aux_pool": None, "member_eval": None, "nonmember_eval": None}
        feats = {}
        for i, (name, rows) in enumerate(sets.items()):
            f = ctx.features[name]
            img, txt = (f.image, f.text) if rows is None else (f.image[rows], f.text[rows])
            feats[name] = self._features(img, txt, scale, [ctx.seed, i], bank)

        (mem, non), diag = pseudo_label_scores(feats["nonmember_known"], feats["aux_pool"],
                                               [feats["member_eval"], feats["nonmember_eval"]],
                                               ctx.splits.aux_is_member, C=self.C)
        diagnostics = {"negatives": self.negatives, "logit_scale": scale, **diag,
                       "raw_means": feature_means(feats)}
        if self.negatives == "batch":
            diagnostics["batch_size"] = self.batch_size
        else:
            diagnostics["bank_size"] = self.bank_size
        return AttackResult(mem, non, diagnostics)
