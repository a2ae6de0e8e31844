"""A target's optimiser and temperature clamp: used by the training step (mia/training/module.py)
and handed to a defense with a loop of its own (defense.fit), which never imports them."""

from __future__ import annotations

import math

import torch


def optimizer(model, spec, total_steps: int):
    """(AdamW, lr schedule stepped per batch) of a target; DP-SGD's own loop uses it too. The
    schedule is spec.schedule's (`lr_factor`); a frozen temperature (train.freeze_logit_scale) keeps
    its initial value, out of the optimiser."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if "logit_scale" in name and spec.freeze_logit_scale:
            # left out of the optimiser, not out of autograd: the trained model is the one a cache
            # hit loads, and white-box attacks differentiate with respect to every parameter
            continue
        # open_clip's rule: no weight decay on gains, biases, embeddings' scale
        (no_decay if p.ndim < 2 or "logit_scale" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=spec.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=True,
    )  # fused AdamW: 2x faster steps on the CPU too
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(spec, total_steps))


def lr_factor(spec, total_steps: int):
    """step -> the factor of train.lr at that optimiser step.

    cosine: linear warm-up over min(warmup_steps, total / 2), then a cosine to zero over the rest,
    so its shape follows the job's own length. wsd (warm-up, stable, decay): linear warm-up over
    warmup_steps, the constant lr, then a linear decay to zero over the last
    spec.cooldown_epochs() of the epochs. Before its cooldown a wsd schedule does not depend on the
    job's length, so every T with the same settings follows one path up to its own cooldown
    (docs/design.md §3.7)."""
    total = max(1, total_steps)
    if spec.schedule == "wsd":
        warmup = spec.warmup_steps
        # The cooldown is whole epochs: it starts at an epoch end, where a checkpoint is exact.
        start = total - total * spec.cooldown_epochs() // spec.epochs

        def wsd(step):
            warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
            return warm if step < start else warm * (total - step) / (total - start)

        return wsd
    warmup = min(spec.warmup_steps, total // 2)

    def cosine(step):  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return cosine


def clamp_temperature(model):
    with torch.no_grad():  # as in open_clip's training loop: temperature at most 100
        model.logit_scale.clamp_(0, math.log(100))
