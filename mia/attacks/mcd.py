"""MCD, the Monte-Carlo dropout attack (docs/design.md §4): attention dropout p in every residual
block of both towers, score = mean image-text cosine over `passes` stochastic forward passes.

The pairs run in the label-blind order of their union (AttackContext.scored_order): a pass's
dropout masks are drawn batch after batch, so a pair's masks, and its score, would otherwise depend
on whether it sits among the members (first) or the non-members.

Dropout runs on a deep copy of the target, so the target (shared with every other attack) is never
touched. Only the attention modules are put in training mode; everything else (LayerNorm,
BatchNorm of RN50, patch dropout, ...) stays in eval mode, so the only randomness is the dropout
on attention weights.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from torch import nn

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL

log = logging.getLogger(__name__)


def _towers(model):
    """(name, module) of the image and text towers of an open_clip CLIP / CustomTextCLIP."""
    return [
        ("visual", model.visual),
        ("text", model.text if hasattr(model, "text") else model.transformer),
    ]


def with_attention_dropout(model: nn.Module, p: float):
    """(copy of `model`, {tower: number of attention modules with dropout p}).

    open_clip's ResidualAttentionBlock holds an nn.MultiheadAttention, whose `dropout` float is
    applied to the attention weights in training mode only; CustomResidualAttentionBlock holds
    open_clip's own Attention, whose `attn_drop` is an nn.Dropout (and whose fused path reads the
    module's own `training` flag). Either way only that module's training flag is switched on.
    """
    model = copy.deepcopy(model).eval()
    counts = {}
    for tower_name, tower in _towers(model):
        counts[tower_name] = 0
        for block in tower.modules():
            if not type(block).__name__.endswith("ResidualAttentionBlock"):
                continue
            attn = block.attn
            if isinstance(attn, nn.MultiheadAttention):
                attn.dropout = p
            elif isinstance(getattr(attn, "attn_drop", None), nn.Dropout):
                attn.attn_drop.p = p
                attn.attn_drop.training = True
            else:
                raise TypeError(
                    f"{type(block).__name__}.attn is a {type(attn).__name__}: "
                    "do not know where its attention dropout is"
                )
            attn.training = True
            counts[tower_name] += 1
        if counts[tower_name] == 0:
            # RN50's image tower is a ResNet: its residual blocks hold no attention.
            log.warning(
                "MCD: no residual attention block in the %s tower; it stays deterministic",
                tower_name,
            )
    return model, counts


class MCD(Attack):
    name = "mcd"

    def __init__(self, *, p: float, passes: int, batch_size: int):
        self.p, self.passes, self.batch_size = p, passes, batch_size

    @torch.no_grad()
    def pass_cos(self, model, images, tokens, seed: int) -> np.ndarray:
        """Cosine of every pair in one stochastic pass, seeded so that a rerun draws the same
        masks."""
        device = next(model.parameters()).device
        cos = []
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for i in range(0, len(images), self.batch_size):
                img = model.encode_image(images[i : i + self.batch_size].to(device), normalize=True)
                txt = model.encode_text(tokens[i : i + self.batch_size].to(device), normalize=True)
                cos.append((img * txt).sum(1).float().cpu())
        return torch.cat(cos).numpy()

    def run(self, ctx: AttackContext) -> AttackResult:
        model, counts = with_attention_dropout(ctx.target.model, self.p)
        (mi, mt), (ni, nt) = ctx.tensors(MEMBER_EVAL), ctx.tensors(NONMEMBER_EVAL)
        images, tokens, n = torch.cat([mi, ni]), torch.cat([mt, nt]), len(mi)
        # A pass's dropout masks are drawn in batch order, so a pair's masks depend on its position:
        # the pairs run in the label-blind order of their union (docs/design.md §4), never members
        # first.
        order = torch.as_tensor(ctx.scored_order(0))
        images, tokens = images[order], tokens[order]
        # One seed per pass, derived from the job's seed: [passes, n] cosines, back in member +
        # non-member order.
        seeds = np.random.SeedSequence(ctx.seed).generate_state(self.passes, dtype=np.uint64) >> 1
        cos = np.stack([self.pass_cos(model, images, tokens, int(s)) for s in seeds])[
            :, np.argsort(order.numpy())
        ]
        score, std = cos.mean(0), cos.std(0)
        diagnostics = {
            "p": float(self.p),
            "passes": int(self.passes),
            "attention_modules": counts,
            "member_std_mean": float(std[:n].mean()),
            "nonmember_std_mean": float(std[n:].mean()),
        }
        return AttackResult(score[:n], score[n:], diagnostics)
