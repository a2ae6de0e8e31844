"""AEA, the augmentation-enhanced attack (Ko et al. 2023, §4.2; docs/design.md §4):

    s = CS(x, y) + sum_k [CS(x, y) - CS(T_k(x), y)]

Members lose more image-text similarity than non-members when their image is perturbed, so the
summed drop adds to the plain cosine. Each T_k acts on the raw PIL image, before the target's own
preprocess. The original code does not publish its transform parameters: here every parameter is
in the config, and every random draw is seeded from (seed, uid, transform, repeat), so a sample's
score does not depend on which other samples share its batch or in what order they come.
"""
from __future__ import annotations

import copy
import hashlib

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED
from mia.validate import ConfigError, require

BILINEAR = v2.InterpolationMode.BILINEAR

# Ko et al. name the transforms but not their strength: conf/attack/aea.yaml sets each one's keyword
# arguments for its torchvision class (mild ones: see the comments there).
SINGLE = ("resize", "crop", "rotation", "color_jitter", "translation", "hflip")
# `combined` composes all of them: geometric first, colour last.
COMBINED_ORDER = ("resize", "crop", "rotation", "translation", "hflip", "color_jitter")


class _DownUp:
    """Resize to `scale` of the image's size and back: removes detail finer than the lower size."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, im):
        w, h = im.size
        small = TF.resize(im, [max(1, round(h * self.scale)), max(1, round(w * self.scale))], BILINEAR)
        return TF.resize(small, [h, w], BILINEAR)

    def __repr__(self):
        return f"DownUp(scale={self.scale})"


class _SameSizeCrop:
    """RandomResizedCrop back to the image's own size (images of a real corpus differ in size)."""

    def __init__(self, **kw):
        self.kw = kw

    def __call__(self, im):
        return v2.RandomResizedCrop(im.size[::-1], interpolation=BILINEAR, **self.kw)(im)

    def __repr__(self):
        return f"SameSizeRandomResizedCrop({', '.join(f'{k}={v}' for k, v in self.kw.items())})"


def build_transform(name: str, params: dict):
    """The transform `name` with its resolved `params` ({transform name: kwargs})."""
    p = params.get(name, {})
    if name == "resize":
        return _DownUp(**p)
    if name == "crop":
        return _SameSizeCrop(**p)
    if name == "rotation":
        return v2.RandomRotation(interpolation=BILINEAR, **p)
    if name == "color_jitter":
        return v2.ColorJitter(**p)
    if name == "translation":
        return v2.RandomAffine(degrees=0, interpolation=BILINEAR, **p)
    if name == "hflip":
        return v2.RandomHorizontalFlip(**p)
    if name == "combined":
        return v2.Compose([build_transform(n, params) for n in COMBINED_ORDER])
    raise ValueError(f"unknown AEA transform {name!r}; choose from {[*SINGLE, 'combined']}")


def sample_seed(seed: int, uid, transform: str, repeat: int) -> int:
    """A stable 63-bit seed for one random draw of one sample (Python's hash() is salted per run)."""
    digest = hashlib.sha256(f"{seed}/{uid}/{transform}/{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class AEA(Attack):
    name = "aea"

    def __init__(self, *, transforms, params, repeats: int, batch_size: int):
        self.transforms = [transforms] if isinstance(transforms, str) else list(transforms)
        self.params = copy.deepcopy(params or {})
        for name in self.params:
            require(name in SINGLE, f"params.{name}", self.params[name], f"unknown AEA transform; choose from {list(SINGLE)}")
        for name in self.transforms:
            require(name in (*SINGLE, "combined"), "transforms", self.transforms,
                    f"unknown transform {name!r}; choose from {[*SINGLE, 'combined']}")
            for used in (SINGLE if name == "combined" else [name]):
                if used not in self.params:
                    raise ConfigError(f"params.{used}", need="is not set: the transform's strength is needed")
        self.repeats = repeats
        self.batch_size = batch_size
        self._built = {name: build_transform(name, self.params) for name in self.transforms}

    @torch.no_grad()
    def transformed_cos(self, ctx: AttackContext, set_name: str, transform: str) -> np.ndarray:
        """CS(T(x), y) of every pair of a set, averaged over `repeats` seeded draws of T."""
        model, t = ctx.target.model, self._built[transform]
        device = next(model.parameters()).device
        feats = ctx.features[set_name]
        images, _ = ctx.pairs(set_name)
        cos = np.zeros(len(images))
        # One seed per (sample, draw) makes the draw independent of batch composition; fork_rng keeps
        # the caller's global RNG state untouched.
        with torch.random.fork_rng(devices=[]):
            for r in range(self.repeats):
                for i in range(0, len(images), self.batch_size):
                    batch = []
                    for uid, im in zip(feats.uids[i:i + self.batch_size], images[i:i + self.batch_size]):
                        torch.manual_seed(sample_seed(ctx.seed, uid, transform, r))
                        batch.append(ctx.target.preprocess(t(im)))
                    emb = model.encode_image(torch.stack(batch).to(device), normalize=True).float().cpu().numpy()
                    cos[i:i + len(batch)] += (emb * feats.text[i:i + len(batch)]).sum(1)
        return cos / self.repeats

    def run(self, ctx: AttackContext) -> AttackResult:
        scores, drops = {}, {}
        for set_name in SCORED:
            cos = ctx.features[set_name].cos.astype(np.float64)
            drop = {k: cos - self.transformed_cos(ctx, set_name, k) for k in self.transforms}
            scores[set_name] = cos + sum(drop.values())
            drops[set_name] = drop
        used = sorted({n for k in self.transforms for n in (SINGLE if k == "combined" else [k])})
        diagnostics = {
            "transforms": self.transforms,
            "transform_repr": {k: repr(t) for k, t in self._built.items()},
            "params": {n: self.params[n] for n in used},
            "repeats": self.repeats,
            "seed": int(ctx.seed),
            "mean_drop": {k: {"member": float(drops[MEMBER_EVAL][k].mean()),
                              "nonmember": float(drops[NONMEMBER_EVAL][k].mean())} for k in self.transforms},
        }
        return AttackResult(scores[MEMBER_EVAL], scores[NONMEMBER_EVAL], diagnostics)
