"""The augmentation pieces aea, imgagree and txtagree share (mia/attacks/augment.py): per-pair
seeds, the transforms and their checks, the seeded image views (translations on tensors, bit for bit
the PIL views) and the agreement statistic."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mia.attacks.augment import (
    COMBINED_ORDER,
    SINGLE,
    agreement,
    build_transform,
    check_transforms,
    image_views,
    sample_seed,
    single_transforms,
    whole_pixel_shift,
)
from mia.attacks.base import AttackContext
from mia.features import SplitFeatures
from mia.validate import ConfigError
from tests.helpers.attacks import make_attack, modality_context, pil_image_views

# --- per-pair seeds -----------------------------------------------------------------------------


def test_sample_seed_is_pinned():
    # Every augmentation attack's scores follow from these seeds: a change of the hash, its input
    # string or the bits kept would change every aea / imgagree / txtagree score.
    assert sample_seed(0, "u1", "crop", 0) == 3263624371760558045
    assert sample_seed(3, "abc", "imgagree", 2) == 3897034354823943718


def test_sample_seed_is_a_function_of_seed_uid_tag_repeat_only():
    seeds = {
        sample_seed(s, u, t, r)
        for s in (0, 1)
        for u in ("u1", "u2")
        for t in ("crop", "rotation")
        for r in (0, 1)
    }
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)
    # uids come as numpy strings from the feature store, seeds as numpy ints: the same draw as
    # Python's
    assert sample_seed(np.int64(7), np.str_("u1"), "crop", np.int64(1)) == sample_seed(
        7, "u1", "crop", 1
    )


# --- transforms ---------------------------------------------------------------------------------

PARAMS = {
    "resize": {"scale": 0.5},
    "crop": {"scale": [0.8, 1.0]},
    "rotation": {"degrees": 5},
    "color_jitter": {"brightness": 0.1},
    "translation": {"translate": [0.1, 0.1]},
    "hflip": {"p": 1.0},
}


def test_build_transform():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 20, 3)).astype(np.uint8))
    for name in SINGLE:
        assert build_transform(name, PARAMS)(im).size == im.size  # every transform keeps the size
    np.testing.assert_array_equal(
        np.asarray(build_transform("hflip", PARAMS)(im)), np.asarray(im)[:, ::-1]
    )
    combined = build_transform("combined", PARAMS)
    assert isinstance(combined, v2.Compose) and len(combined.transforms) == len(COMBINED_ORDER)
    assert repr(combined.transforms[0]) == "DownUp(scale=0.5)"  # geometric first, colour last
    assert isinstance(combined.transforms[-1], v2.ColorJitter)
    assert single_transforms(["hflip", "combined"]) == ["hflip", *COMBINED_ORDER]


@pytest.mark.parametrize(
    "names, params, key",
    [
        (["blur"], PARAMS, "transforms"),
        (["combined"], PARAMS, "transforms"),  # not among these choices
        (["crop"], {**PARAMS, "blur": {"sigma": 1}}, "params.blur"),
        (["rotation", "crop"], {"rotation": {"degrees": 5}}, "params.crop"),
    ],
)
def test_check_transforms_names_the_key(names, params, key):
    with pytest.raises(ConfigError) as err:
        check_transforms(names, params, SINGLE)
    assert err.value.key == key


def test_check_transforms_accepts_combined_when_offered():
    check_transforms(["combined", "hflip"], PARAMS, (*SINGLE, "combined"))


# --- seeded image views -------------------------------------------------------------------------


def _subset(ctx, set_name, idx):
    f = ctx.features[set_name]
    images, captions = ctx.pairs(set_name)
    return replace(
        ctx,
        features={set_name: SplitFeatures(f.uids[idx], f.image[idx], f.text[idx], f.cos[idx])},
        _raw={set_name: ([images[i] for i in idx], [captions[i] for i in idx])},
    )


def test_image_views_depend_on_seed_uid_tag_repeat_only():
    ctx = modality_context(planted=False, n=20)
    t = build_transform("translation", {"translation": {"translate": [0.3, 0.3]}})
    full = image_views(ctx, "member_eval", t, "tag", repeats=2, batch_size=20)
    assert full.shape[:2] == (2, 20) and not np.allclose(full[0], full[1])  # two different draws
    # A reordered subset in batches of 3 gets each pair's very same views.
    idx = np.arange(20)[::-3]
    part = image_views(
        _subset(ctx, "member_eval", idx), "member_eval", t, "tag", repeats=2, batch_size=3
    )
    np.testing.assert_allclose(
        part, full[:, idx], atol=1e-6
    )  # batch size may move the last float bit
    # ... other draws under another job seed or another tag.
    assert not np.allclose(
        image_views(replace(ctx, seed=ctx.seed + 1), "member_eval", t, "tag", 2, 20), full
    )
    assert not np.allclose(image_views(ctx, "member_eval", t, "other", 2, 20), full)


def test_image_views_leave_the_callers_rng_alone():
    ctx = modality_context(planted=False, n=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    image_views(
        ctx, "member_eval", build_transform("rotation", {"rotation": {"degrees": 30}}), "tag", 2, 4
    )
    assert torch.equal(torch.rand(3), expected)


# --- translations on tensors ---------------------------------------------------------------------


class _Pixels:
    """A stand-in image tower that returns its input: image_views then returns the views
    themselves."""

    def __init__(self):
        self._p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        yield self._p

    def encode_image(self, x, normalize=True):
        return x.flatten(1)


def pixel_context(n=100, side=32):
    """Random RGB images at the size of open_clip's eval transform (the tensor path), and three that
    PIL keeps: one larger (resized and cropped), one greyscale, one RGBA."""
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(n)
    ]
    images[5] = Image.fromarray(rng.integers(0, 256, (side + 8, side + 8, 3), dtype=np.uint8))
    images[17] = images[17].convert("L")
    images[40] = images[40].convert("RGBA")
    uids = np.array([f"pair{i}" for i in range(n)])
    empty = np.zeros((n, 1), np.float32)
    target = SimpleNamespace(
        model=_Pixels(), preprocess=open_clip.image_transform(side, is_train=False)
    )
    return AttackContext(
        features={"member_eval": SplitFeatures(uids, empty, empty, empty[:, 0])},
        splits=None,
        target=target,
        seed=0,
        _raw={"member_eval": (images, [""] * n)},
    )


def drawn_shifts(ctx, transform, tag, repeats):
    """Every (tx, ty) the views of ctx's member_eval draw, as RandomAffine draws them."""
    affine, im = whole_pixel_shift(transform), torch.zeros(3, 32, 32)
    out = []
    with torch.random.fork_rng(devices=[]):
        for uid in ctx.uids("member_eval"):
            for r in range(repeats):
                torch.manual_seed(sample_seed(ctx.seed, uid, tag, r))
                out.append(affine.make_params([im])["translate"])
    return np.array(out)


def test_imgagree_translations_on_tensors_are_the_pil_views_for_every_shift():
    ctx = pixel_context()
    attack = make_attack("imgagree", repeats=8)
    assert (
        whole_pixel_shift(attack._t) is attack._t.transforms[0]
    )  # the configured views take the tensor path
    fast = image_views(ctx, "member_eval", attack._t, "imgagree", 8, batch_size=16)
    assert fast.shape == (8, 100, 3 * 32 * 32)
    assert np.array_equal(
        fast, pil_image_views(ctx, "member_eval", attack._t, "imgagree", 8, batch_size=16)
    )
    # translate 0.1 of 32 px: round(uniform(-3.2, 3.2)), every shift from -3 to 3 on both axes drawn
    shifts = drawn_shifts(ctx, attack._t, "imgagree", 8)
    for axis in (0, 1):
        assert set(shifts[:, axis]) == set(range(-3, 4))


@pytest.mark.parametrize("translate", [[0.05, 0.05], [0.3, 0.1], [0.0, 0.2]])
def test_other_translations_on_tensors_are_the_pil_views(translate):
    ctx = pixel_context(n=60)
    t = build_transform("translation", {"translation": {"translate": translate}})
    assert whole_pixel_shift(t) is t
    fast = image_views(ctx, "member_eval", t, "translation", 6, batch_size=7)
    assert np.array_equal(
        fast, pil_image_views(ctx, "member_eval", t, "translation", 6, batch_size=7)
    )


@pytest.mark.parametrize(
    "transform",
    [
        build_transform("rotation", PARAMS),
        build_transform("combined", PARAMS),
        v2.Compose([build_transform("translation", PARAMS), build_transform("hflip", PARAMS)]),
        v2.RandomAffine(
            degrees=0,
            translate=[0.1, 0.1],
            scale=[0.9, 1.1],
            interpolation=v2.InterpolationMode.BILINEAR,
        ),
        v2.RandomAffine(
            degrees=0, translate=[0.1, 0.1], fill=255, interpolation=v2.InterpolationMode.BILINEAR
        ),
        v2.RandomAffine(
            degrees=0,
            translate=[0.1, 0.1],
            center=[3.3, 4.1],
            interpolation=v2.InterpolationMode.BILINEAR,
        ),
        v2.RandomAffine(degrees=0, translate=[0.1, 0.1]),  # nearest
    ],
)
def test_anything_but_a_pure_translation_takes_the_pil_path(transform):
    assert whole_pixel_shift(transform) is None


# --- the agreement statistic --------------------------------------------------------------------


def test_agreement_on_known_views():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    diag = [2**-0.5, 2**-0.5]
    # pair 0: views e1, e2, e1 against e1; pair 1: views diag, diag, e2 against e2
    views = np.array([[e1, diag], [e2, diag], [e1, e2]], dtype=np.float32)
    original = np.array([e1, e2])
    np.testing.assert_allclose(
        agreement(views, original, "to_original"), [2 / 3, (2**-0.5 * 2 + 1) / 3], rtol=1e-6
    )
    # pairwise: the mean over the 3 unordered pairs of distinct views (r, r') = (0, 1), (0, 2), (1,
    # 2)
    np.testing.assert_allclose(
        agreement(views, original, "pairwise"), [(0 + 1 + 0) / 3, (1 + 2**-0.5 * 2) / 3], rtol=1e-6
    )
    assert agreement(views, original, "pairwise").dtype == np.float64


def test_agreement_pairwise_is_the_mean_over_distinct_views():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 7, 4))
    v /= np.linalg.norm(v, axis=2, keepdims=True)
    brute = np.mean([(v[r] * v[s]).sum(1) for r in range(5) for s in range(5) if r != s], axis=0)
    np.testing.assert_allclose(agreement(v, v[0], "pairwise"), brute)
    with pytest.raises(ConfigError):
        agreement(v, v[0], "max")
