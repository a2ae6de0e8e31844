"""AEA, the augmentation-enhanced attack (Ko et al. 2023, §4.2; docs/design.md §4):

    s = CS(x, y) + sum_k [CS(x, y) - CS(T_k(x), y)]

Members lose more image-text similarity than non-members when their image is perturbed, so the
summed drop adds to the plain cosine. Each T_k acts on the raw PIL image, before the target's own
preprocess. The original code does not publish its transform parameters: here every parameter is
in the config, and every random draw is seeded from (seed, uid, transform, repeat), so a sample's
score does not depend on which other samples share its batch or in what order they come (the
transforms and the seeded views: mia/attacks/augment.py, shared with imgagree).
"""

from __future__ import annotations

import copy

import numpy as np

from mia.attacks.augment import (
    SINGLE,
    build_transform,
    check_transforms,
    image_views,
    single_transforms,
)
from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED


class AEA(Attack):
    name = "aea"
    per_pair = True  # each set is scored alone, every draw seeded by its pair

    def __init__(self, *, transforms, params, repeats: int, batch_size: int):
        self.transforms = [transforms] if isinstance(transforms, str) else list(transforms)
        # Ko et al. name the transforms but not their strength: conf/attack/aea.yaml sets each one's
        # keyword arguments for its torchvision class (mild ones: see the comments there).
        self.params = copy.deepcopy(params or {})
        check_transforms(self.transforms, self.params, (*SINGLE, "combined"))
        self.repeats = repeats
        self.batch_size = batch_size
        self._built = {name: build_transform(name, self.params) for name in self.transforms}

    def transformed_cos(self, ctx: AttackContext, set_name: str, transform: str) -> np.ndarray:
        """CS(T(x), y) of every pair of a set, averaged over `repeats` seeded draws of T."""
        views = image_views(
            ctx, set_name, self._built[transform], transform, self.repeats, self.batch_size
        )
        text = ctx.features[set_name].text
        cos = np.zeros(len(text))
        for emb in views:
            cos += (emb * text).sum(1)
        return cos / self.repeats

    def scored(self, ctx: AttackContext, set_name: str) -> tuple[np.ndarray, dict]:
        """(scores, {transform: CS(x, y) - CS(T(x), y)}) of every pair of a set."""
        cos = ctx.features[set_name].cos.astype(np.float64)
        drop = {k: cos - self.transformed_cos(ctx, set_name, k) for k in self.transforms}
        return cos + sum(drop.values()), drop

    def score(self, ctx: AttackContext, set_name: str) -> np.ndarray:
        return self.scored(ctx, set_name)[0]

    def run(self, ctx: AttackContext) -> AttackResult:
        scores, drops = {}, {}
        for set_name in SCORED:
            scores[set_name], drops[set_name] = self.scored(ctx, set_name)
        used = sorted(set(single_transforms(self.transforms)))
        diagnostics = {
            "transforms": self.transforms,
            "transform_repr": {k: repr(t) for k, t in self._built.items()},
            "params": {n: self.params[n] for n in used},
            "repeats": self.repeats,
            "seed": int(ctx.seed),
            "mean_drop": {
                k: {
                    "member": float(drops[MEMBER_EVAL][k].mean()),
                    "nonmember": float(drops[NONMEMBER_EVAL][k].mean()),
                }
                for k in self.transforms
            },
        }
        return AttackResult(scores[MEMBER_EVAL], scores[NONMEMBER_EVAL], diagnostics)
