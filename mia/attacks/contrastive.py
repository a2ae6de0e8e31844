"""The contrastive (InfoNCE) loss of a pair and its gradient norm, shared by gradnorm (gradients
w.r.t. the embeddings) and paramgrad (gradients w.r.t. the parameters), and the model's logit
scale they and the shadows' statistics (shadows.py) put on the cosines."""

from __future__ import annotations

import numpy as np
import torch

from mia.validate import is_int, require


def logit_scale(model) -> float:
    """exp(logit_scale): the factor a CLIP puts on its cosines before the softmax (1 /
    temperature)."""
    return float(model.logit_scale.detach().exp())


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
