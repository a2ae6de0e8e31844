"""The `defense` group: settings refused by key, cache keys, each defense's mechanism, DP-SGD's
sensitivity and accounting, and one end-to-end job per training defense."""

import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip import ClipLoss, SimpleTokenizer

from mia.defenses.augment_image import AugmentImage
from mia.defenses.augment_text import drop_tokens
from mia.defenses.dp_sgd import DPSGD, clipped_sum, epsilon, group_of, steps_for
from mia.defenses.embedding_noise import EmbeddingNoise
from mia.model import build_model
from mia.training.spec import TrainSpec, target_key
from tests.helpers.config import compose_config


def _key(*overrides):
    cfg = compose_config(*overrides)
    return target_key(TrainSpec.from_cfg(cfg), "corpus", cfg.data.split, cfg.data.size)


# --- config and keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,message",
    [
        ("defense.noise_multiplier=0", "defense.noise_multiplier=0"),
        ("defense.groups=0", "defense.groups=0"),
        ("+defense.clip=1", "defense.clip is not a setting of defense"),
    ],
)
def test_bad_dp_settings_are_refused_by_key(override, message):
    with pytest.raises(ValueError, match=message):
        TrainSpec.from_cfg(compose_config("defense=dp_sgd", override))


def test_a_missing_setting_is_refused_by_key():
    with pytest.raises(ValueError, match="defense.groups is missing"):
        TrainSpec.from_cfg(compose_config("defense=dp_sgd", "~defense.groups"))


def test_none_keeps_the_key_targets_had_before_defenses():
    cfg = compose_config()
    spec = TrainSpec.from_cfg(cfg)
    assert spec.defense.name == "none" and "defense" not in spec.weights_key()
    # a spec built without any defense (as code before the group existed did) has the same key
    bare = {
        k: getattr(spec, k)
        for k in ("model", "epochs", "batch_size", "lr", "weight_decay", "warmup_steps")
    }
    assert (
        target_key(TrainSpec(**bare, seed=spec.seed), "corpus", cfg.data.split, cfg.data.size)
        == _key()
    )
    # output perturbation leaves the weights, and so the key, alone
    assert _key("defense=embedding_noise") == _key()


def test_training_defenses_and_their_strengths_have_keys_of_their_own():
    keys = [
        _key(),
        _key("defense=dp_sgd"),
        _key("defense=dp_sgd", "defense.noise_multiplier=2"),
        _key("defense=augment_image"),
        _key("defense=augment_text"),
        _key("defense=augment_text", "defense.word_dropout=0.4"),
    ]
    assert len(set(keys)) == len(keys)


# --- mechanisms -----------------------------------------------------------------------------------


def test_word_dropout_keeps_start_end_and_order():
    tok = SimpleTokenizer(context_length=40)
    tokens = tok(["a small red circle on the left on a blue background, photo by kabo tere"])
    assert torch.equal(drop_tokens(tokens, 0.0, torch.Generator().manual_seed(0)), tokens)
    out = drop_tokens(tokens, 0.5, torch.Generator().manual_seed(0))
    n_in, n_out = int((tokens != 0).sum()), int((out != 0).sum())
    assert 2 < n_out < n_in  # some dropped, start and end kept
    assert out[0, 0] == tokens[0, 0] and out[0, n_out - 1] == tokens[0, n_in - 1]
    kept = out[0, 1 : n_out - 1].tolist()
    inner = tokens[0, 1 : n_in - 1].tolist()
    it = iter(inner)
    assert all(t in it for t in kept)  # a subsequence: order preserved
    assert (out[0, n_out:] == 0).all()


def test_image_augmentation_is_seeded_and_identity_at_zero():
    images = torch.rand(4, 3, 32, 32)
    same, _ = AugmentImage(0.0, 0.0).augment(images, None, torch.Generator().manual_seed(0))
    assert torch.allclose(same, images, atol=1e-5)
    aug = AugmentImage(0.25, 0.1)
    a, _ = aug.augment(images, None, torch.Generator().manual_seed(1))
    b, _ = aug.augment(images, None, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and (a - images).abs().mean() > 0.05


def test_embedding_noise_is_a_function_of_the_query():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    keys = [f"image:{i}" for i in range(50)]
    weak, strong = EmbeddingNoise(0.05, 0), EmbeddingNoise(0.5, 0)
    out = weak.release(emb, keys)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.array_equal(out, weak.release(emb, keys))  # asked again: same answer
    assert np.array_equal(out[7], weak.release(emb[7:8], keys[7:8])[0])  # alone or in a batch
    assert np.allclose(EmbeddingNoise(0.0, 0).release(emb, keys), emb, atol=1e-6)
    drift = lambda d: float((d.release(emb, keys) * emb).sum(1).mean())  # noqa: E731
    assert drift(strong) < drift(weak) < 1


# --- DP-SGD ---------------------------------------------------------------------------------------


def test_one_pair_moves_the_clipped_sum_by_at_most_2C():
    """The sensitivity the noise is scaled to: add one pair to a Poisson batch, the clipped group
    sum moves by <= 2C; and only that pair's group changes."""
    model, tokenizer, _ = build_model(compose_config().model)
    params = [p for p in model.parameters() if p.requires_grad]
    torch.manual_seed(0)
    images, tokens = (
        torch.randn(24, 3, 32, 32),
        tokenizer([f"a red circle photo by x{i}" for i in range(24)]),
    )
    uids = [f"u{i}" for i in range(24)]
    C, groups = 0.05, 3
    group = torch.as_tensor(group_of(uids, groups, seed=0))
    without = torch.arange(0, 20)
    with_x = torch.cat(
        [without, torch.tensor([23])]
    )  # pair 23 added (a group of several: a non-zero loss)
    a, clipped = clipped_sum(model, params, ClipLoss(), images, tokens, without, group, groups, C)
    b, _ = clipped_sum(model, params, ClipLoss(), images, tokens, with_x, group, groups, C)
    assert any(clipped)  # C is small enough that clipping is active
    diff = math.sqrt(sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b, strict=True)))
    assert 0 < diff <= 2 * C + 1e-6
    # the same pair's group alone reproduces the change
    g = int(group[23])
    a_g, _ = clipped_sum(
        model, params, ClipLoss(), images, tokens, without[group[without] == g], group, groups, C
    )
    b_g, _ = clipped_sum(
        model, params, ClipLoss(), images, tokens, with_x[group[with_x] == g], group, groups, C
    )
    diff_g = math.sqrt(sum(float(((x - y) ** 2).sum()) for x, y in zip(a_g, b_g, strict=True)))
    assert diff_g == pytest.approx(diff, rel=1e-4)


@pytest.mark.parametrize(
    "sigma,n,batch,epochs", [(1.0, 1000, 128, 40), (0.6, 4000, 256, 10), (3.0, 300, 64, 2)]
)
def test_reported_epsilon_matches_opacus_stepwise_accountant(sigma, n, batch, epochs):
    """What dp_sgd reports equals Opacus' RDP accountant stepped as its own optimizer steps it, once
    per step at the same noise and Poisson rate; and Opacus' inverse gives back the noise."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    acc = DPSGD(sigma, 1.0, 1e-5, 1).accounting(n, batch, epochs)
    assert acc["sample_rate"] == batch / n and acc["steps"] == epochs * math.ceil(n / batch)
    stepwise = RDPAccountant()
    for _ in range(acc["steps"]):
        stepwise.step(noise_multiplier=sigma, sample_rate=batch / n)
    assert math.isfinite(acc["epsilon"]) and acc["epsilon"] > 0
    assert acc["epsilon"] == pytest.approx(stepwise.get_epsilon(1e-5), rel=1e-9)
    sigma_back = get_noise_multiplier(
        target_epsilon=acc["epsilon"],
        target_delta=1e-5,
        sample_rate=batch / n,
        steps=acc["steps"],
        accountant="rdp",
        epsilon_tolerance=0.001,
    )
    assert sigma_back == pytest.approx(sigma, rel=0.02)


def test_more_noise_less_epsilon():
    eps = [epsilon(s, 0.128, steps_for(1000, 128, 40), 1e-5) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in pairwise(eps))


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_dp_sgd_job_reports_a_finite_epsilon(make_cfg, small_corpus):
    from mia.pipeline import run

    res = json.loads(run(make_cfg("defense=dp_sgd", "defense.groups=4")).read_text())
    privacy = res["defense"]["privacy"]
    assert res["defense"]["name"] == "dp_sgd" and math.isfinite(privacy["epsilon"])
    assert privacy["sample_rate"] == 128 / 300 and privacy["steps"] == 2 * math.ceil(300 / 128)
    assert privacy["epsilon"] == pytest.approx(epsilon(1.0, 128 / 300, privacy["steps"], 1e-5))
    meta = json.loads((Path(res["target"]["checkpoint"]).parent / "target.json").read_text())
    assert meta["times_sampled"]["max"] >= 1 and meta["spec"]["defense"]["name"] == "dp_sgd"
    assert "utility" in res and 0 <= res["utility"]["retrieval"]["i2t_r1"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("defense", ["augment_image", "augment_text", "embedding_noise"])
def test_defended_jobs_run_and_record_their_defense(make_cfg, small_target, defense):
    from mia.pipeline import run

    plain = json.loads(run(make_cfg()).read_text())
    res = json.loads(run(make_cfg(f"defense={defense}")).read_text())
    assert res["defense"]["name"] == defense and res["defense"]["label"].startswith(defense)
    same_weights = defense == "embedding_noise"
    assert (res["target"]["cache_key"] == plain["target"]["cache_key"]) == same_weights
    assert res["target"]["cache_hit"] == same_weights
    # a different target or a noisy release: the scores change
    assert res["attacks"]["csa"]["auc"] != plain["attacks"]["csa"]["auc"]
