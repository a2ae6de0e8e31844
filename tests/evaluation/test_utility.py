"""Utility of a target: Recall@k on the held-out pool, and zero-shot attributes of the embedded
corpus."""

import json

import numpy as np
import pytest

from mia import tracking
from mia.data.synthetic import make_sample
from mia.evaluation import utility


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_recall_perfect_wrong_and_constant():
    rng = np.random.default_rng(0)
    image = _unit(rng.normal(size=(40, 64)))
    perfect = utility.recall_at_k(image, image)
    assert perfect["i2t_r1"] == perfect["t2i_r1"] == 1.0 and perfect["pool_size"] == 40
    assert perfect["chance_r1"] == 1 / 40 and perfect["chance_r10"] == 10 / 40
    # every caption is its neighbour's: the partner is never first
    shifted = utility.recall_at_k(image, np.roll(image, 1, axis=0))
    assert shifted["i2t_r1"] == shifted["t2i_r1"] == 0.0
    # a model that embeds everything alike ranks no partner above anything: no recall, not full
    # recall
    const = utility.recall_at_k(np.ones((40, 4)) / 2, np.ones((40, 4)) / 2)
    assert const["i2t_r10"] == const["t2i_r10"] == 0.0


def test_recall_of_noisy_partners_sits_between_chance_and_one():
    rng = np.random.default_rng(1)
    image = _unit(rng.normal(size=(200, 32)))
    text = _unit(image + rng.normal(scale=0.25, size=image.shape))
    r = utility.recall_at_k(image, text)
    assert r["chance_r1"] < r["i2t_r1"] <= r["i2t_r5"] <= r["i2t_r10"] <= 1


def test_attributes_parse_the_generators_one_object_captions():
    captions = [make_sample(i, seed=0)[1] for i in range(200)]
    parsed = [utility.parse_attributes(c) for c in captions]
    one = [(c, p) for c, p in zip(captions, parsed, strict=True) if p is not None]
    assert 50 < len(one) < 150  # one object or two, about half each
    for caption, (colour, shape) in one:
        assert (
            caption.split()[2:4] == [colour, shape]
            and " and a " not in caption.split(" background")[0]
        )
    shifted = [make_sample(i, seed=0, style="shifted")[1] for i in range(50)]
    assert all(utility.parse_attributes(c) is None for c in shifted)


def test_attribute_accuracy_against_planted_class_embeddings():
    rng = np.random.default_rng(2)
    classes = {
        "colour": _unit(rng.normal(size=(len(utility.COLOURS), 64))),
        "shape": _unit(rng.normal(size=(len(utility.SHAPES), 64))),
    }
    labels = [(utility.COLOURS[i % 12], utility.SHAPES[i % 6]) for i in range(120)]
    image = _unit(
        np.stack([classes["colour"][i % 12] + classes["shape"][i % 6] for i in range(120)])
    )
    acc = utility.attribute_accuracy(image, labels, classes)
    assert acc["colour_acc"] == acc["shape_acc"] == 1.0
    assert acc["colour_chance"] == 1 / 12 and acc["shape_chance"] == 1 / 6
    wrong = utility.attribute_accuracy(
        image,
        [(utility.COLOURS[(i + 1) % 12], utility.SHAPES[(i + 1) % 6]) for i in range(120)],
        classes,
    )
    assert wrong["colour_acc"] == wrong["shape_acc"] == 0.0


@pytest.mark.slow
def test_every_results_json_has_utility_and_w_and_b_gets_it(default_job):
    _, path = default_job
    res = json.loads(path.read_text())
    r = res["utility"]["retrieval"]
    assert (
        r["pool"] == "nonmember_eval"
        and r["pool_size"] == res["config"]["data"]["split"]["eval_size"]
    )
    assert r["chance_r1"] == 1 / r["pool_size"]
    assert all(0 <= r[f"{d}_r{k}"] <= 1 for d in ("i2t", "t2i") for k in utility.KS)
    a = res["utility"]["attributes"]
    assert a["n_images"] > 50 and 0 <= a["shape_acc"] <= 1 and a["shape_chance"] == 1 / 6
    assert res["defense"] == {"name": "none", "label": "none"}
    flat = tracking.summary(res)
    assert flat["utility/i2t_r1"] == r["i2t_r1"] and flat["utility/shape_acc"] == a["shape_acc"]


def test_prompts_follow_the_grammar_and_cover_every_class_alike():
    texts, labels = utility.prompts()
    assert len(texts) == len(set(texts)) == 2 * 12 * 6 * 9
    assert all(
        utility.parse_attributes(t + ", photo by x") == (utility.COLOURS[c], utility.SHAPES[h])
        for t, (c, h) in zip(texts, labels, strict=True)
    )
    assert len(set(np.bincount(labels[:, 0]))) == len(set(np.bincount(labels[:, 1]))) == 1
    # the background is never the object's colour
    assert not any(
        t.endswith(f"on a {utility.COLOURS[c]} background")
        for t, (c, _) in zip(texts, labels, strict=True)
    )
