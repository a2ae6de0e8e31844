"""The embedded corpus past its shards (mia/data/generated.py): a member pool of any size, generated
in the loader, equal to what the shards hold where both exist."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mia.data.dedup import normalise_caption
from mia.data.generated import GeneratedPairs, Members
from mia.data.pairs import load_pairs
from mia.data.splits import build_splits
from mia.data.synthetic import make_sample
from mia.model import build_model
from mia.pipeline import prepare, run
from mia.validate import build


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_cache):
    from tests.helpers.caches import seed_cache
    from tests.helpers.config import SMALL, compose_config

    cfg = compose_config(
        *SMALL, f"paths.root_dir={tmp_path_factory.mktemp('generated')}", "logger=none"
    )
    seed_cache(small_cache, cfg.paths.cache_dir)
    return cfg, build(cfg.data, "data").member_corpus(Path(cfg.paths.cache_dir))


def test_a_generated_pair_is_the_shards_pair(corpus):
    cfg, members = corpus
    model, tokenizer, preprocess = build_model(cfg.model)
    uids = members.index.uids[[0, 7, 500, 1199]]
    images, tokens = load_pairs(members.shards, list(uids), preprocess, tokenizer)
    pairs = GeneratedPairs(
        build(cfg.data, "data").extension().extended(uids, 0, {}), preprocess, tokenizer
    )
    got_images, got_tokens, positions = pairs.__getitems__([0, 1, 2, 3])
    assert torch.equal(got_images, images) and torch.equal(got_tokens, tokens)  # bit for bit
    assert positions.tolist() == [0, 1, 2, 3]


def test_the_pool_runs_past_the_shards_nested_and_disjoint(corpus):
    cfg, members = corpus
    ext = build(cfg.data, "data").extension()
    small = build_splits(members.index, cfg.data.split, 300, extension=ext)
    assert isinstance(small.members, np.ndarray)  # inside the pool: the arrays it always was
    big = build_splits(members.index, cfg.data.split, 5000, extension=ext)
    bigger = build_splits(members.index, cfg.data.split, "100M", extension=ext)
    assert (
        isinstance(big.members, Members)
        and len(big.members) == 5000
        and len(bigger.members) == 100_000_000
    )
    assert np.array_equal(big.members[:300], small.members)  # nested across N
    assert np.array_equal(bigger.members[:5000], big.members[:5000])
    assert np.array_equal(big.member_eval, small.member_eval) and np.array_equal(
        big.nonmember_eval, small.nonmember_eval
    )
    first = big.members[len(big.members.base)]
    assert first == "syn0000000001200"  # the first pair past the 1,200 the shards hold
    past = big.members[len(big.members.base) :]
    assert len(set(past)) == len(past) and not set(past) & set(members.index.uids)
    # every held-out caption is a key no generated member may share
    held = ~np.isin(members.index.uids, big.members.base)
    assert {normalise_caption(c) for c in members.index.captions[held]} <= big.members.forbidden[
        "caption"
    ]
    assert bigger.summary()["members"] == 100_000_000


def test_a_generated_member_that_collides_with_a_non_member_is_redrawn(corpus, caplog):
    cfg, members = corpus
    big = build_splits(
        members.index, cfg.data.split, 2000, extension=build(cfg.data, "data").extension()
    )
    _, tokenizer, preprocess = build_model(cfg.model)
    at = len(big.members.base)  # the first generated member, corpus pair 1200
    own = make_sample(1200, seed=0)[1]
    collided = Members(
        big.members.base,
        big.members.extra,
        big.members.first,
        big.members.seed,
        big.members.sample_kw,
        {"caption": {normalise_caption(own)}},
    )
    with caplog.at_level("WARNING"):
        _, caption = GeneratedPairs(collided, preprocess, tokenizer).pair(1200)
    assert caption != own and normalise_caption(caption) not in collided.forbidden["caption"]
    assert "shares its caption with a non-member: redrawn" in caplog.text
    # without the collision, the corpus's own pair
    assert (
        GeneratedPairs(big.members, preprocess, tokenizer).pair(
            int(big.members.corpus_indices([at])[0])
        )[1]
        == own
    )


@pytest.mark.slow
def test_a_target_trains_past_the_shards_in_memory_or_streamed_alike(make_cfg, small_corpus):
    base = ["data.size=1024", "train.batch_size=64", "train.num_workers=1"]
    kept = run(make_cfg(*base, "data.in_memory=true"))
    streamed = run(make_cfg(*base, "data.in_memory=false", "seed=0"))
    res = [json.loads(p.read_text()) for p in (kept, streamed)]
    assert (
        res[0]["target"]["cache_key"] == res[1]["target"]["cache_key"]
    )  # how it is loaded is no part of it
    # the second job found the first's target: train again, streaming, into another cache
    fresh = json.loads(
        run(
            make_cfg(*base, "data.in_memory=false", "paths.cache_dir=${paths.root_dir}/.cache2")
        ).read_text()
    )
    tdir = [Path(r["target"]["checkpoint"]).parent for r in (res[0], fresh)]
    meta = [json.loads((d / "target.json").read_text()) for d in tdir]
    assert [m["plan"]["in_memory"] for m in meta] == [True, False]
    gen = meta[0]["generated"]
    assert gen["count"] == 1024 - len((tdir[0] / "trained_uids.txt").read_text().split()) > 0
    assert gen["first_index"] == 1200 and meta[0]["plan"]["samples"] == 1024 * 2
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in tdir)
    assert all(
        torch.equal(a[k], b[k]) for k in a
    )  # the same pairs in the same order: the same weights
    assert res[0]["data"]["members"] == 1024


def test_prepare_takes_a_size_past_the_shards_without_generating_it(make_cfg, small_corpus):
    _, _, splits, _ = prepare(make_cfg("data.size=1M"))
    assert len(splits.members) == 1_000_000 and splits.members.extra > 990_000
