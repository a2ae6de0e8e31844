"""The augmentation pieces aea, imgagree and txtagree share (mia/attacks/augment.py): per-pair seeds,
the transforms and their checks, the seeded image views and the agreement statistic."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from mia.attacks.augment import (COMBINED_ORDER, SINGLE, agreement, build_transform, check_transforms,
                                 image_views, sample_seed, single_transforms)
from mia.features import SplitFeatures
from mia.validate import ConfigError
from tests.helpers.attacks import modality_context

# --- per-pair seeds -----------------------------------------------------------------------------


def test_sample_seed_is_pinned():
    # Every augmentation attack's scores follow from these seeds: a change of the hash, its input
    # string or the bits kept would change every aea / imgagree / txtagree score.
    assert sample_seed(0, "u1", "crop", 0) == 3263624371760558045
    assert sample_seed(3, "abc", "imgagree", 2) == 3897034354823943718


def test_sample_seed_is_a_function_of_seed_uid_tag_repeat_only():
    seeds = {sample_seed(s, u, t, r) for s in (0, 1) for u in ("u1", "u2") for t in ("crop", "rotation")
             for r in (0, 1)}
    assert len(seeds) == 16 and all(0 <= s < 2 ** 63 for s in seeds)
    # uids come as numpy strings from the feature store, seeds as numpy ints: the same draw as Python's
    assert sample_seed(np.int64(7), np.str_("u1"), "crop", np.int64(1)) == sample_seed(7, "u1", "crop", 1)


# --- transforms ---------------------------------------------------------------------------------

PARAMS = {"resize": {"scale": 0.5}, "crop": {"scale": [0.8, 1.0]}, "rotation": {"degrees": 5},
          "color_jitter": {"brightness": 0.1}, "translation": {"translate": [0.1, 0.1]}, "hflip": {"p": 1.0}}


def test_build_transform():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 20, 3)).astype(np.uint8))
    for name in SINGLE:
        assert build_transform(name, PARAMS)(im).size == im.size  # every transform keeps the size
    np.testing.assert_array_equal(np.asarray(build_transform("hflip", PARAMS)(im)), np.asarray(im)[:, ::-1])
    combined = build_transform("combined", PARAMS)
    assert isinstance(combined, v2.Compose) and len(combined.transforms) == len(COMBINED_ORDER)
    assert repr(combined.transforms[0]) == "DownUp(scale=0.5)"  # geometric first, colour last
    assert isinstance(combined.transforms[-1], v2.ColorJitter)
    assert single_transforms(["hflip", "combined"]) == ["hflip", *COMBINED_ORDER]


@pytest.mark.parametrize("names, params, key", [
    (["blur"], PARAMS, "transforms"),
    (["combined"], PARAMS, "transforms"),                        # not among these choices
    (["crop"], {**PARAMS, "blur": {"sigma": 1}}, "params.blur"),
    (["rotation", "crop"], {"rotation": {"degrees": 5}}, "params.crop"),
])
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
    return replace(ctx, features={set_name: SplitFeatures(f.uids[idx], f.image[idx], f.text[idx], f.cos[idx])},
                   _raw={set_name: ([images[i] for i in idx], [captions[i] for i in idx])})


def test_image_views_depend_on_seed_uid_tag_repeat_only():
    ctx = modality_context(planted=False, n=20)
    t = build_transform("translation", {"translation": {"translate": [0.3, 0.3]}})
    full = image_views(ctx, "member_eval", t, "tag", repeats=2, batch_size=20)
    assert full.shape[:2] == (2, 20) and not np.allclose(full[0], full[1])  # two different draws
    # A reordered subset in batches of 3 gets each pair's very same views.
    idx = np.arange(20)[::-3]
    part = image_views(_subset(ctx, "member_eval", idx), "member_eval", t, "tag", repeats=2, batch_size=3)
    np.testing.assert_allclose(part, full[:, idx], atol=1e-6)  # batch size may move the last float bit
    # ... other draws under another job seed or another tag.
    assert not np.allclose(image_views(replace(ctx, seed=ctx.seed + 1), "member_eval", t, "tag", 2, 20), full)
    assert not np.allclose(image_views(ctx, "member_eval", t, "other", 2, 20), full)


def test_image_views_leave_the_callers_rng_alone():
    ctx = modality_context(planted=False, n=4)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    image_views(ctx, "member_eval", build_transform("rotation", {"rotation": {"degrees": 30}}), "tag", 2, 4)
    assert torch.equal(torch.rand(3), expected)


# --- the agreement statistic --------------------------------------------------------------------

def test_agreement_on_known_views():
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    diag = [2 ** -0.5, 2 ** -0.5]
    # pair 0: views e1, e2, e1 against e1; pair 1: views diag, diag, e2 against e2
    views = np.array([[e1, diag], [e2, diag], [e1, e2]], dtype=np.float32)
    original = np.array([e1, e2])
    np.testing.assert_allclose(agreement(views, original, "to_original"), [2 / 3, (2 ** -0.5 * 2 + 1) / 3], rtol=1e-6)
    # pairwise: the mean over the 3 unordered pairs of distinct views (r, r') = (0, 1), (0, 2), (1, 2)
    np.testing.assert_allclose(agreement(views, original, "pairwise"), [(0 + 1 + 0) / 3, (1 + 2 ** -0.5 * 2) / 3], rtol=1e-6)
    assert agreement(views, original, "pairwise").dtype == np.float64


def test_agreement_pairwise_is_the_mean_over_distinct_views():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 7, 4))
    v /= np.linalg.norm(v, axis=2, keepdims=True)
    brute = np.mean([(v[r] * v[s]).sum(1) for r in range(5) for s in range(5) if r != s], axis=0)
    np.testing.assert_allclose(agreement(v, v[0], "pairwise"), brute)
    with pytest.raises(ConfigError):
        agreement(v, v[0], "max")
