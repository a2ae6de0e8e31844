"""A target's optimiser and temperature clamp: used by the training step (mia/training/module.py) and
handed to a defense with a loop of its own (defense.fit), which never imports them."""

from __future__ import annotations

import math

import torch


def optimizer(model, spec, total_steps: int):
    """(AdamW, warm-up + cosine schedule stepped per batch) of a target; DP-SGD's own loop uses it too."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
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
    total = max(1, total_steps)
    warmup = min(spec.warmup_steps, total // 2)

    def schedule(step):  # linear warm-up, then cosine to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


def clamp_temperature(model):
    with torch.no_grad():  # as in open_clip's training loop: temperature at most 100
        model.logit_scale.clamp_(0, math.log(100))
