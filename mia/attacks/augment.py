"""What the augmentation attacks share (aea, imgagree, txtagree): the image transforms and their
checks, one seed per random draw, the seeded augmented views of a set's images, and the agreement
statistic of several views.

Every random draw is seeded from (seed, uid, tag, repeat) alone, so a pair's score does not depend
on which other pairs share its batch or in what order they come. Each transform acts on the raw PIL
image, before the target's own preprocess; its strength (keyword arguments of its torchvision v2
class) is set in conf/attack/<attack>.yaml, never in code. A translation alone, on an image the
preprocess would not resize, is done on tensors instead: a whole-pixel shift, bit for bit the PIL
path's view (`image_views`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from mia.data.tensors import TensorPreprocess
from mia.validate import ConfigError, require

BILINEAR = v2.InterpolationMode.BILINEAR

SINGLE = ("resize", "crop", "rotation", "color_jitter", "translation", "hflip")
# `combined` composes all of them: geometric first, colour last.
COMBINED_ORDER = ("resize", "crop", "rotation", "translation", "hflip", "color_jitter")

STATISTICS = ("to_original", "pairwise")


class _DownUp:
    """Resize to `scale` of the image's size and back: removes detail finer than the lower size."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, im):
        w, h = im.size
        small = TF.resize(
            im, [max(1, round(h * self.scale)), max(1, round(w * self.scale))], BILINEAR
        )
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
    """The transform `name` (one of SINGLE, or `combined`) with its strengths `params`
    ({transform name: kwargs})."""
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
    raise ValueError(f"unknown transform {name!r}; choose from {[*SINGLE, 'combined']}")


def single_transforms(names) -> list[str]:
    """The single transforms that `names` apply, `combined` spelled out."""
    return [n for name in names for n in (COMBINED_ORDER if name == "combined" else [name])]


def check_transforms(names, params: dict, choices) -> None:
    """Refuse a transform outside `choices`, a strength for no known transform, and a transform
    used without its strength (the code holds none)."""
    for name in params:
        require(
            name in SINGLE,
            f"params.{name}",
            params[name],
            f"unknown transform; choose from {list(SINGLE)}",
        )
    for name in names:
        require(
            name in choices,
            "transforms",
            names,
            f"unknown transform {name!r}; choose from {list(choices)}",
        )
    for name in single_transforms(names):
        if name not in params:
            raise ConfigError(
                f"params.{name}", need="is not set: the transform's strength is needed"
            )


def sample_seed(seed: int, uid, tag: str, repeat: int) -> int:
    """A stable 63-bit seed for one random draw of one pair (Python's hash() is salted per run)."""
    digest = hashlib.sha256(f"{seed}/{uid}/{tag}/{repeat}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def whole_pixel_shift(transform) -> v2.RandomAffine | None:
    """The RandomAffine of `transform` where all it does is translate (`translation` alone, as
    build_transform makes it), else None. RandomAffine rounds its shifts to whole pixels, and
    bilinear sampling at whole-pixel offsets copies pixels, so its view is the image shifted, with
    the fill (0, black) where nothing was shifted in."""
    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    if len(steps) != 1 or type(steps[0]) is not v2.RandomAffine:
        return None
    t = steps[0]
    only_shifts = (
        list(t.degrees) == [0, 0]
        and t.scale is None
        and t.shear is None
        and t.center is None
        and t.fill == 0
        and t.interpolation == BILINEAR
    )
    return t if only_shifts else None


def shifted(image: torch.Tensor, tx: int, ty: int) -> torch.Tensor:
    """image [..., h, w] moved right by tx and down by ty whole pixels, zeros where nothing moved
    in."""
    h, w = image.shape[-2:]
    out = torch.zeros_like(image)
    out[..., max(ty, 0) : h + min(ty, 0), max(tx, 0) : w + min(tx, 0)] = image[
        ..., max(-ty, 0) : h + min(-ty, 0), max(-tx, 0) : w + min(-tx, 0)
    ]
    return out


@torch.no_grad()
def image_views(
    ctx, set_name: str, transform, tag: str, repeats: int, batch_size: int
) -> np.ndarray:
    """[repeats, n, d] L2-normalised image embeddings (float32) of `transform` applied to every
    image of a set, draw r of pair uid seeded by sample_seed(ctx.seed, uid, tag, r).

    A pure translation (whole_pixel_shift) of an RGB image at the size of a preprocess of
    open_clip's shape (TensorPreprocess.size: Resize and CenterCrop leave it as it is) is done on
    the uint8 tensor: the same make_params call draws the same shift from the same seeded RNG, and
    TensorPreprocess finishes the batch as ToTensor and Normalize would, so the view is the PIL
    path's bit for bit (tests/attacks/test_augment.py), without PIL's per-image cost. Any other
    transform or image takes the PIL path."""
    model = ctx.target.model
    device = next(model.parameters()).device
    uids = ctx.uids(set_name)
    images, _ = ctx.pairs(set_name)  # the captions are never looked at
    shift, tensors = whole_pixel_shift(transform), TensorPreprocess(ctx.target.preprocess)
    side = tensors.size if shift is not None else None
    # uint8 [3, side, side] of each image the tensor path takes, None for those PIL transforms
    pixels = [
        torch.from_numpy(np.array(im)).permute(2, 0, 1)
        if side is not None and im.mode == "RGB" and im.size == (side, side)
        else None
        for im in images
    ]
    stack = tensors.stack if side is not None else torch.stack
    out = []
    # fork_rng: the per-draw manual_seed leaves the caller's global RNG state as it was.
    with torch.random.fork_rng(devices=[]):
        for r in range(repeats):
            emb = []
            for i in range(0, len(images), batch_size):
                batch = []
                for uid, im, px in zip(
                    uids[i : i + batch_size],
                    images[i : i + batch_size],
                    pixels[i : i + batch_size],
                    strict=True,
                ):
                    # the CPU generator alone: the transforms draw from it, and torch.manual_seed
                    # would also seed every other device type, formatting a stack trace per view
                    torch.default_generator.manual_seed(sample_seed(ctx.seed, uid, tag, r))
                    if px is None:
                        batch.append(ctx.target.preprocess(transform(im)))
                    else:
                        batch.append(shifted(px, *shift.make_params([px])["translate"]))
                emb.append(
                    model.encode_image(stack(batch).to(device), normalize=True).float().cpu()
                )
            out.append(torch.cat(emb).numpy())
    return np.stack(out)


def agreement(views, original, statistic: str) -> np.ndarray:
    """[n] agreement of each pair's views [repeats, n, d] (unit rows), in float64:
    to_original: mean_r <v_r, original>;
    pairwise: mean over r != r' of <v_r, v_r'> (repeats >= 2)."""
    v = np.asarray(views, dtype=np.float64)
    repeats = len(v)
    if statistic == "to_original":
        return np.einsum("rnd,nd->n", v, np.asarray(original, dtype=np.float64)) / repeats
    if statistic != "pairwise":
        raise ConfigError("statistic", statistic, f"choose from {list(STATISTICS)}")
    total = np.einsum("rnd,snd->n", v, v)  # every ordered pair of views, the r = r' terms included
    diagonal = np.einsum("rnd,rnd->n", v, v)
    return (total - diagonal) / (repeats * (repeats - 1))
