"""AEA, the augmentation-enhanced attack (Ko et al. 2023, §4.2; DESIGN §4):

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
from omegaconf import DictConfig, ListConfig, OmegaConf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mia.attacks.base import Attack, AttackContext, AttackResult

BILINEAR = v2.InterpolationMode.BILINEAR

# Ko et al. name the transforms but not their strength. AEA measures how sensitive the pair's
# similarity is to a small perturbation, so the defaults are mild: strong ones (or a hue shift, which
# renames the colours a caption mentions) change what the image shows and add noise, not signal.
# Anything under a transform's name is passed to its torchvision class as keyword arguments.
DEFAULT_PARAMS = {
    "resize": {"scale": 0.75},                                   # down to 75% of each side, back up
    "crop": {"scale": [0.8, 1.0], "ratio": [0.75, 4 / 3]},       # RandomResizedCrop, same output size
    "rotation": {"degrees": 5},                                  # RandomRotation, +-5 degrees
    "color_jitter": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.0},
    "translation": {"translate": [0.05, 0.05]},                  # RandomAffine shift, up to 5% of a side
    "hflip": {"p": 1.0},                                         # always flip: p=0.5 wastes half the draws
}
SINGLE = tuple(DEFAULT_PARAMS)
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


def _plain(x):
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, (DictConfig, ListConfig)) else x


class AEA(Attack):
    name = "aea"

    def __init__(self, transforms=("combined",), params=None, repeats: int = 4, batch_size: int = 256):
        transforms = _plain(transforms)
        self.transforms = [transforms] if isinstance(transforms, str) else list(transforms)
        # Per-transform override of the defaults, key by key.
        self.params = copy.deepcopy(DEFAULT_PARAMS)
        for name, kw in (_plain(params) or {}).items():
            if name not in self.params:
                raise ValueError(f"params.{name}: unknown AEA transform; choose from {list(SINGLE)}")
            self.params[name].update(kw or {})
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
        for set_name in ("member_eval", "nonmember_eval"):
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
            "mean_drop": {k: {"member": float(drops["member_eval"][k].mean()),
                              "nonmember": float(drops["nonmember_eval"][k].mean())} for k in self.transforms},
        }
        return AttackResult(scores["member_eval"], scores["nonmember_eval"], diagnostics)
