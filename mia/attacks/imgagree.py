"""Image-only: agreement of the image embedding across augmentations (EncoderMI, Liu et al. 2021,
adapted to CLIP's image tower; docs/design.md §4.12).

An auditor who holds only images (a photographer) queries the image tower alone. A contrastive
encoder is trained to map augmented views of its training images close together, so a member's
embedding should move less under augmentation than a non-member's:

    s(x) = mean_r cos(f_img(T_r(x)), f_img(x))          statistic: to_original (default)
    s(x) = mean_{r != r'} cos(f_img(T_r(x)), f_img(T_r'(x)))   statistic: pairwise (EncoderMI's)

No caption and no text tower are used. Each T_r composes the transforms listed in the config (their
strengths live in conf/attack/imgagree.yaml, as AEA's do), and every draw is seeded from (seed, uid,
repeat), so a pair's score does not depend on its batch.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torchvision.transforms import v2

from mia.attacks.aea import SINGLE, build_transform, sample_seed
from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED
from mia.validate import ConfigError, is_int, require

STATISTICS = ("to_original", "pairwise")


class ImageAgreement(Attack):
    name = "imgagree"

    def __init__(self, *, transforms, params, repeats: int, statistic: str, batch_size: int):
        self.transforms = list(transforms)
        self.params = copy.deepcopy(params or {})
        require(len(self.transforms) > 0, "transforms", self.transforms, "list at least one transform")
        for name in self.transforms:
            require(name in SINGLE, "transforms", self.transforms, f"unknown transform {name!r}; choose from {list(SINGLE)}")
            if name not in self.params:
                raise ConfigError(f"params.{name}", need="is not set: the transform's strength is needed")
        require(statistic in STATISTICS, "statistic", statistic, f"choose from {list(STATISTICS)}")
        require(is_int(repeats) and repeats >= (2 if statistic == "pairwise" else 1), "repeats", repeats,
                "an integer >= 1 (>= 2 for statistic: pairwise)")
        self.repeats, self.statistic, self.batch_size = repeats, statistic, batch_size
        self._t = v2.Compose([build_transform(n, self.params) for n in self.transforms])

    @torch.no_grad()
    def views(self, ctx: AttackContext, set_name: str) -> np.ndarray:
        """[repeats, n, d] L2-normalised image embeddings of the seeded augmented views of a set."""
        model = ctx.target.model
        device = next(model.parameters()).device
        uids = ctx.uids(set_name)
        images, _ = ctx.pairs(set_name)  # the captions are never looked at
        out = []
        with torch.random.fork_rng(devices=[]):  # the caller's RNG state stays as it was
            for r in range(self.repeats):
                emb = []
                for i in range(0, len(images), self.batch_size):
                    batch = []
                    for uid, im in zip(uids[i:i + self.batch_size], images[i:i + self.batch_size]):
                        torch.manual_seed(sample_seed(ctx.seed, uid, self.name, r))
                        batch.append(ctx.target.preprocess(self._t(im)))
                    emb.append(model.encode_image(torch.stack(batch).to(device), normalize=True).float().cpu())
                out.append(torch.cat(emb).numpy())
        return np.stack(out)

    def score(self, ctx: AttackContext, set_name: str) -> np.ndarray:
        v = self.views(ctx, set_name).astype(np.float64)
        if self.statistic == "to_original":
            return np.einsum("rnd,nd->n", v, ctx.features[set_name].image.astype(np.float64)) / self.repeats
        total = np.einsum("rnd,snd->n", v, v)  # every ordered pair of views, the r = r' terms included
        diagonal = np.einsum("rnd,rnd->n", v, v)
        return (total - diagonal) / (self.repeats * (self.repeats - 1))

    def run(self, ctx: AttackContext) -> AttackResult:
        s = {name: self.score(ctx, name) for name in SCORED}
        return AttackResult(s[MEMBER_EVAL], s[NONMEMBER_EVAL], {
            "transforms": self.transforms, "params": {n: self.params[n] for n in self.transforms},
            "repeats": self.repeats, "statistic": self.statistic, "seed": int(ctx.seed),
            "mean_agreement": {"member": float(s[MEMBER_EVAL].mean()), "nonmember": float(s[NONMEMBER_EVAL].mean())}})
