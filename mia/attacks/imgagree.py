"""Image-only: agreement of the image embedding across augmentations (EncoderMI, Liu et al. 2021,
adapted to CLIP's image tower; docs/design.md §4.12).

An auditor who holds only images (a photographer) queries the image tower alone. A contrastive
encoder is trained to map augmented views of its training images close together, so a member's
embedding should move less under augmentation than a non-member's:

    s(x) = mean_r cos(f_img(T_r(x)), f_img(x))          statistic: to_original (default)
    s(x) = mean_{r != r'} cos(f_img(T_r(x)), f_img(T_r'(x)))   statistic: pairwise (EncoderMI's)

No caption and no text tower are used. Each T_r composes the transforms listed in the config (their
strengths live in conf/attack/imgagree.yaml, as AEA's do), and every draw is seeded from (seed, uid,
repeat), so a pair's score does not depend on its batch (mia/attacks/augment.py).
"""

from __future__ import annotations

import copy

import numpy as np
from torchvision.transforms import v2

from mia.attacks.augment import (
    SINGLE,
    STATISTICS,
    agreement,
    build_transform,
    check_transforms,
    image_views,
)
from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED
from mia.validate import is_int, require


class ImageAgreement(Attack):
    name = "imgagree"
    per_pair = True  # each set is scored alone, every draw seeded by its pair

    def __init__(self, *, transforms, params, repeats: int, statistic: str, batch_size: int):
        self.transforms = list(transforms)
        self.params = copy.deepcopy(params or {})
        require(
            len(self.transforms) > 0, "transforms", self.transforms, "list at least one transform"
        )
        check_transforms(self.transforms, self.params, SINGLE)
        require(statistic in STATISTICS, "statistic", statistic, f"choose from {list(STATISTICS)}")
        require(
            is_int(repeats) and repeats >= (2 if statistic == "pairwise" else 1),
            "repeats",
            repeats,
            "an integer >= 1 (>= 2 for statistic: pairwise)",
        )
        self.repeats, self.statistic, self.batch_size = repeats, statistic, batch_size
        self._t = v2.Compose([build_transform(n, self.params) for n in self.transforms])

    def score(self, ctx: AttackContext, set_name: str) -> np.ndarray:
        # One tag for the whole composition: each draw of T_r is seeded by (seed, uid, imgagree, r).
        views = image_views(ctx, set_name, self._t, self.name, self.repeats, self.batch_size)
        return agreement(views, ctx.features[set_name].image, self.statistic)

    def run(self, ctx: AttackContext) -> AttackResult:
        s = {name: self.score(ctx, name) for name in SCORED}
        return AttackResult(
            s[MEMBER_EVAL],
            s[NONMEMBER_EVAL],
            {
                "transforms": self.transforms,
                "params": {n: self.params[n] for n in self.transforms},
                "repeats": self.repeats,
                "statistic": self.statistic,
                "seed": int(ctx.seed),
                "mean_agreement": {
                    "member": float(s[MEMBER_EVAL].mean()),
                    "nonmember": float(s[NONMEMBER_EVAL].mean()),
                },
            },
        )
