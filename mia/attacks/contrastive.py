"""The contrastive (InfoNCE) loss of a pair and its gradient norm, shared by gradnorm (gradients
w.r.t. the embeddings) and paramgrad (gradients w.r.t. the parameters), and the model's logit
scale they and the shadows' statistics (shadows.py) put on the cosines.

Precision. A well-fitted pair's loss is tiny: at a logit scale of 65 a margin of 0.3 in cosine
puts exp(-20) on the negatives. `logsumexp(logits) - logit_pos` then cancels to exactly 0 (in
float32 from margins of about 17 in logits), and so does the gradient's `softmax - onehot` on the
positive, so thousands of pairs share one feature value and their scores tie. Here every loss is
written through its margins, x = logsumexp_j(logit_j - logit_pos) over the negatives j, as
softplus(x) = log(1 + e^x): nothing cancels, autograd's gradient (sigmoid(x) times the softmax over
the negatives) keeps its relative precision, and everything is float64. The attacks use the logs
of the loss and of the gradient norm (log_softplus, log_norm), which stay distinct however small
the loss."""

from __future__ import annotations

import math

import numpy as np
import torch

from mia.validate import is_int, require


def logit_scale(model) -> float:
    """exp(logit_scale): the factor a CLIP puts on its cosines before the softmax (1 /
    temperature)."""
    return float(model.logit_scale.detach().exp())


def softplus(x):
    """log(1 + e^x), exact in float64 for every x (torch's default threshold of 20 returns x
    itself from x = 20, 2e-9 off)."""
    return torch.nn.functional.softplus(x, threshold=50)


def log_softplus(x):
    """log(softplus(x)) for any x: below -700 softplus(x) = e^x underflows, and its log is x."""
    return torch.where(x > -700, softplus(x.clamp(min=-700)).log(), x)


def log_norm(v):
    """log ||v|| along the last axis, with v scaled by its largest entry first so that no square
    underflows; -inf for a zero vector."""
    top = v.abs().amax(-1)
    scaled = v / top.clamp(min=torch.finfo(v.dtype).tiny)[..., None]
    return torch.linalg.vector_norm(scaled, dim=-1).log() + top.log()


def batch_margins(img, txt, scale):
    """(x_row [n], x_col [n]) of one batch, logits = scale * img @ txt.T: x_row[k] =
    logsumexp_{j != k}(logit_kj - logit_kk), x_col[k] likewise over column k. CE(row k) =
    softplus(x_row[k])."""
    logits = scale * img @ txt.T
    pos = logits.diagonal()
    self_pair = torch.eye(len(img), dtype=torch.bool, device=img.device)
    row = (logits - pos[:, None]).masked_fill(self_pair, -math.inf).logsumexp(1)
    col = (logits - pos[None, :]).masked_fill(self_pair, -math.inf).logsumexp(0)
    return row, col


def bank_margins(img, txt, bank_img, bank_txt, scale):
    """(x_row, x_col) of each pair against a fixed bank: image k vs [its text, bank texts], text k
    vs [its image, bank images], as batch_margins. Pair k's margins depend on pair k only, so this
    also works on a single sample (shapes [d] or [n, d])."""
    pos = (img * txt).sum(-1, keepdim=True)
    row = (scale * (img @ bank_txt.T - pos)).logsumexp(-1)
    col = (scale * (txt @ bank_img.T - pos)).logsumexp(-1)
    return row, col


def symmetric_loss(row, col):
    """(CE(row) + CE(column)) / 2 from the margins."""
    return (softplus(row) + softplus(col)) / 2


def log_symmetric_loss(row, col):
    """log of symmetric_loss, which stays finite and distinct for losses far below float64's
    resolution of 1 + loss."""
    return torch.logaddexp(log_softplus(row), log_softplus(col)) - math.log(2)


def batch_losses(img, txt, scale):
    """Per-sample symmetric InfoNCE inside one batch: (CE(row k) + CE(column k)) / 2."""
    return symmetric_loss(*batch_margins(img, txt, scale))


def bank_losses(img, txt, bank_img, bank_txt, scale):
    """Per-sample symmetric loss of each pair against a fixed bank (bank_margins)."""
    return symmetric_loss(*bank_margins(img, txt, bank_img, bank_txt, scale))


def log_loss_and_grad_norm(img, txt, scale, bank=None):
    """(log l [n], log g [n]), float64, of one group: the group is one batch when `bank` is None,
    else each pair meets only the bank (bank = (bank_img, bank_txt)). g is the norm of the gradient
    of the summed loss w.r.t. the pair's normalised image and text embeddings, concatenated."""
    img = img.detach().to(torch.float64).requires_grad_(True)
    txt = txt.detach().to(torch.float64).requires_grad_(True)
    if bank is None:
        row, col = batch_margins(img, txt, scale)
    else:
        row, col = bank_margins(img, txt, *(b.to(torch.float64) for b in bank), scale)
    g_img, g_txt = torch.autograd.grad(symmetric_loss(row, col).sum(), [img, txt])
    return log_symmetric_loss(row, col).detach(), log_norm(torch.cat([g_img, g_txt], 1))


def split_known(n_known: int, bank_size: int, seed: int):
    """(bank indices, remaining indices) of D_no: a seeded draw of `bank_size` pairs for the
    bank."""
    require(
        is_int(bank_size) and 0 < bank_size <= n_known - 2,
        "bank_size",
        bank_size,
        f"an integer in [1, {n_known - 2}]: D_no has {n_known} pairs and at least 2 must stay out "
        "of the bank for z-scoring",
    )
    order = np.random.default_rng([seed, 7]).permutation(n_known)
    return np.sort(order[:bank_size]), np.sort(order[bank_size:])
