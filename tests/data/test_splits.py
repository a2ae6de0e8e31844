import hashlib
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

from mia.data.dedup import normalise_caption
from mia.data.shards import Index
from mia.data.splits import build_splits, check_disjoint
from mia.sizes import parse_size
from mia.training.spec import TrainSpec, target_key
from mia.validate import build

SPLIT = OmegaConf.create(
    {"seed": 0, "holdout": 300, "eval_size": 50, "known_size": 100, "aux_size": 100}
)


def word(i):
    """A letters-only word unique to i (digits vanish in caption normalisation)."""
    return "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in str(i)) + "q"


def index(n, prefix="u", caption=lambda i: f"a caption with word {word(i)}"):
    uids = np.array([f"{prefix}{i}" for i in range(n)])
    caps = np.array([caption(i) for i in range(n)])
    urls = np.array([f"http://x/{prefix}{i}.jpg" for i in range(n)])
    return Index(uids, caps, urls)


def all_sets(s):
    return dict(
        members=s.members,
        member_eval=s.member_eval,
        nonmember_eval=s.nonmember_eval,
        nonmember_known=s.nonmember_known,
        aux=s.aux_pool,
    )


def test_splits_are_disjoint_and_nested():
    idx = index(1000)
    small, large = build_splits(idx, SPLIT, 100), build_splits(idx, SPLIT, "500")
    for s in (small, large):
        non = np.concatenate([s.nonmember_eval, s.nonmember_known, s.aux_pool[~s.aux_is_member]])
        assert not np.intersect1d(s.members, non).size
        assert not np.intersect1d(
            s.member_eval, np.concatenate([s.nonmember_known, s.aux_pool])
        ).size
        assert np.isin(s.member_eval, s.members).all()  # eval members are trained on
        assert np.isin(s.aux_pool[s.aux_is_member], s.members).all()
        assert len(s.nonmember_eval) == len(s.member_eval) == 50
    assert np.array_equal(large.members[:100], small.members)  # nested prefixes
    assert np.array_equal(small.member_eval, large.member_eval)
    assert np.array_equal(small.nonmember_eval, large.nonmember_eval)


def test_dedup_drops_pairs_on_both_sides():
    # Captions differing only in digits and punctuation normalise to the same text.
    idx = index(
        1000, caption=lambda i: f"The photo #{i % 400}!" if i % 7 == 0 else f"unique {word(i)} pic"
    )
    s = build_splits(idx, SPLIT, 100)
    assert s.dedup_dropped > 0
    caps = dict(zip(idx.uids, (normalise_caption(c) for c in idx.captions), strict=True))
    member_caps = {caps[u] for u in s.members}
    assert not member_caps & {
        caps[u] for u in np.concatenate([s.nonmember_eval, s.nonmember_known])
    }


def test_normalise_caption():
    assert normalise_caption("  The RED circle, #42 is on the left!") == "red circle left"


def test_size_larger_than_pool():
    with pytest.raises(ValueError, match=r"data.size=900 exceeds the member pool of 700"):
        build_splits(index(1000), SPLIT, "900")


def test_eval_size_is_capped_so_aux_keeps_its_members():
    """K = min(eval_size, N - D_all's member half): weak supervision keeps trained members to learn
    from."""
    big = OmegaConf.merge(SPLIT, {"eval_size": 400})
    s = build_splits(index(1000), big, 200)
    assert len(s.member_eval) == len(s.nonmember_eval) == 150 and s.aux_is_member.sum() == 50
    assert np.isin(s.member_eval, s.members).all()
    tiny = build_splits(
        index(1000), SPLIT, 20
    )  # N below D_all's member half: K = min(N, eval_size)
    assert len(s.member_eval) == 150 and len(tiny.member_eval) == len(tiny.nonmember_eval) == 20


def test_held_out_part_grows_from_the_far_end_without_touching_the_members():
    idx = index(1000)
    base = build_splits(idx, SPLIT, 200)
    big = build_splits(idx, OmegaConf.merge(SPLIT, {"eval_size": 150, "known_size": 200}), 200)
    assert base.held_out_extra == 0 and big.held_out_extra == 150 + 200 + 50 - 300
    assert np.array_equal(big.members, base.members)  # the same target
    assert np.array_equal(big.member_eval, base.members[:150])
    assert np.array_equal(big.nonmember_eval[:50], base.nonmember_eval)
    assert len(big.nonmember_eval) == 150 and len(big.nonmember_known) == 200
    assert big.member_pool_size == base.member_pool_size - big.held_out_extra
    non = np.concatenate(
        [big.nonmember_eval, big.nonmember_known, big.aux_pool[~big.aux_is_member]]
    )
    check_disjoint(members=big.members, nonmembers=non)
    # Training data of every N the shortened pool holds is unchanged; the far end is only filtered,
    # so de-duplication never takes a member from the pool because of it.
    rep, _ = repetitive_index()
    r0 = build_splits(rep, SPLIT, 100)
    r1 = build_splits(rep, OmegaConf.merge(SPLIT, {"eval_size": 100, "known_size": 150}), 100)
    assert r1.held_out_extra > 0 and np.array_equal(r0.members, r1.members)
    caps = dict(zip(rep.uids, (normalise_caption(c) for c in rep.captions), strict=True))
    assert not {caps[u] for u in r1.members} & {
        caps[u] for u in np.concatenate([r1.nonmember_eval, r1.nonmember_known])
    }


def test_too_few_held_out():
    """Growth may not reach into the first N pairs of the pool: then the sizes are refused with a
    fit."""
    cfg = OmegaConf.merge(SPLIT, {"known_size": 400})
    with pytest.raises(
        ValueError,
        match=r"data.split.eval_size=50: the non-member sets need 500 pairs .*far end "
        r"of the member pool past data.size=600 holds only 100 more; raise "
        r"data.split.holdout.*Sizes that fit",
    ):
        build_splits(index(1000), cfg, 600)


def test_overlapping_uids_are_refused():
    idx = index(1000)
    idx.uids[500] = idx.uids[10]  # one uid on two pairs: could be member and non-member
    with pytest.raises(ValueError, match="occur more than once"):
        build_splits(idx, SPLIT, 100)
    with pytest.raises(ValueError, match="both members and nonmember_eval"):
        check_disjoint(members=np.array(["a", "b"]), nonmember_eval=np.array(["c", "b"]))


def test_ood_nonmembers_leave_member_pool_unchanged():
    idx, ood = (
        index(1000),
        index(800, prefix="o", caption=lambda i: f"other style caption v{word(i)}"),
    )
    iid, shifted = build_splits(idx, SPLIT, 200), build_splits(idx, SPLIT, 200, nonmember_index=ood)
    assert np.array_equal(iid.members, shifted.members)
    assert all(u.startswith("o") for u in shifted.nonmember_eval)
    assert all(u.startswith("o") for u in shifted.aux_pool[~shifted.aux_is_member])


def split_digest(s) -> str:
    """One hash of every uid list of a split, in order, and the aux ground truth."""
    h = hashlib.sha256()
    for name in (
        "members",
        "member_eval",
        "nonmember_eval",
        "nonmember_known",
        "aux_pool",
        "aux_is_member",
    ):
        h.update(name.encode())
        h.update("\n".join(map(str, getattr(s, name))).encode())
    return h.hexdigest()[:16]


def repetitive_index():
    """1000 pairs whose captions and URLs repeat across any boundary, and an OOD corpus sharing
    some."""
    idx = Index(
        np.array([f"u{i}" for i in range(1000)]),
        np.array(
            [
                f"The photo #{i % 400}!" if i % 7 == 0 else f"unique {word(i)} pic"
                for i in range(1000)
            ]
        ),
        np.array(
            [f"http://x/{i % 300 if i % 11 == 0 else i}.jpg" if i % 13 else "" for i in range(1000)]
        ),
    )
    ood = Index(
        np.array([f"o{i}" for i in range(800)]),
        np.array([f"The photo #{i}" if i % 5 == 0 else f"other {word(i)}" for i in range(800)]),
        np.array([f"http://x/{i}.jpg" if i % 9 == 0 else f"http://y/{i}" for i in range(800)]),
    )
    return idx, ood


# Digests of the splits before de-duplication became configurable (commit ef0e219): the default
# rules [caption, url] must keep every split, and so every existing figure, bit for bit.
PINNED_REPETITIVE = {"iid": ("e42baa8c94da94cd", 187), "ood": ("1860bd2ec30dd41e", 388)}
PINNED_EMBEDDED_SMALL = {"iid": "82d7dcb893c5119d", "ood": "f75c722ce4f968b4"}
PINNED_EMBEDDED_DEFAULT = {"iid": "82f821db6a7ed105", "ood": "5b977fbaeddfb300"}


@pytest.mark.parametrize("dedup", [None, ["caption", "url"], ["url", "caption"]])
def test_default_dedup_keeps_the_splits_bit_for_bit(dedup):
    idx, ood = repetitive_index()
    cfg = SPLIT if dedup is None else OmegaConf.merge(SPLIT, {"dedup": dedup})
    iid, shifted = build_splits(idx, cfg, 100), build_splits(idx, cfg, 100, nonmember_index=ood)
    assert (split_digest(iid), iid.dedup_dropped) == PINNED_REPETITIVE["iid"]
    assert (split_digest(shifted), shifted.dedup_dropped) == PINNED_REPETITIVE["ood"]


def embedded_digests(make_cfg, cache_dir, *overrides, small=True):
    cfg = make_cfg(*overrides, small=small)
    members = build(cfg.data, "data").member_corpus(cache_dir)
    ood = build(cfg.data, "data").sibling_corpus(cache_dir)
    return {
        "iid": split_digest(build_splits(members.index, cfg.data.split, cfg.data.size)),
        "ood": split_digest(build_splits(members.index, cfg.data.split, cfg.data.size, ood.index)),
    }


@pytest.fixture(scope="module")
def default_corpora(tmp_path_factory):
    """A cache for the 24k corpus of conf/data/synthetic.yaml (and its sibling): each takes tens of
    seconds to generate, so the tests below generate it once and only read it."""
    return tmp_path_factory.mktemp("default_corpora")


def test_embedded_corpus_splits_are_pinned(make_cfg, small_corpus):
    assert embedded_digests(make_cfg, small_corpus) == PINNED_EMBEDDED_SMALL


@pytest.mark.slow
def test_default_embedded_corpus_splits_are_pinned(make_cfg, default_corpora):
    """The 24k corpus and split sizes of conf/data/synthetic.yaml, which the figures use."""
    assert (
        embedded_digests(make_cfg, default_corpora, "logger=none", small=False)
        == PINNED_EMBEDDED_DEFAULT
    )


@pytest.mark.slow
def test_the_default_corpus_scores_5k_a_side_at_16k_without_touching_the_members(
    make_cfg, default_corpora
):
    cfg = make_cfg("logger=none", small=False)
    members = build(cfg.data, "data").member_corpus(default_corpora)
    base = build_splits(members.index, cfg.data.split, "16k")
    big = build_splits(members.index, OmegaConf.merge(cfg.data.split, {"eval_size": "5k"}), "16k")
    assert len(big.member_eval) == len(big.nonmember_eval) == 5000 and big.held_out_extra > 0
    assert np.array_equal(big.members, base.members) and np.array_equal(
        big.member_eval[:500], base.member_eval
    )


def test_dedup_rules_are_selectable_and_each_rule_counted():
    """A pair two rules would drop counts for the first rule in data.split.dedup, so the counts add
    up."""
    idx, _ = repetitive_index()
    caption, url, both, swapped, none = (
        build_splits(idx, OmegaConf.merge(SPLIT, {"dedup": rules}), 100)
        for rules in (["caption"], ["url"], ["caption", "url"], ["url", "caption"], [])
    )
    assert caption.dedup_by_rule == {"caption": caption.dedup_dropped} and url.dedup_by_rule == {
        "url": url.dedup_dropped
    }
    assert both.dedup_dropped == swapped.dedup_dropped == sum(both.dedup_by_rule.values()) == 187
    assert (
        both.dedup_by_rule["caption"] == caption.dedup_dropped
        and swapped.dedup_by_rule["url"] == url.dedup_dropped
    )
    assert both.summary()["dedup_by_rule"] == both.dedup_by_rule
    assert none.dedup_dropped == 0 and none.dedup_by_rule == {}
    # Without caption de-duplication, repeated captions do land on both sides.
    caps = dict(zip(idx.uids, (normalise_caption(c) for c in idx.captions), strict=True))
    assert {caps[u] for u in url.members} & {caps[u] for u in url.nonmember_eval}


def test_image_rule_drops_identical_images_across_the_boundary():
    idx = index(1000)
    idx.sha256 = np.array([f"{i % 600:064x}" if i % 3 == 0 else f"{i:064x}" for i in range(1000)])
    s = build_splits(idx, OmegaConf.merge(SPLIT, {"dedup": ["image"]}), 100)
    assert s.dedup_dropped > 0 and s.dedup_by_rule == {"image": s.dedup_dropped}
    sha = dict(zip(idx.uids, idx.sha256, strict=True))
    non = np.concatenate([s.nonmember_eval, s.nonmember_known, s.aux_pool[~s.aux_is_member]])
    assert not {sha[u] for u in s.members} & {sha[u] for u in non}


@pytest.mark.parametrize("dedup", ["url", ["caption", "sha"], ["url", "url"]])
def test_bad_dedup_rules_are_refused_with_the_key(dedup):
    with pytest.raises(
        ValueError,
        match=r"data.split.dedup=.*must be a list of distinct rules out of "
        r"\[caption,url,image\]",
    ):
        build_splits(index(1000), OmegaConf.merge(SPLIT, {"dedup": dedup}), 100)


def clipart_corpus(n=8115):
    """A web folder whose captions repeat: two thirds say 'various cliparts'."""
    rng = np.random.default_rng(1)
    caps = np.array(
        ["Various cliparts" if rng.random() < 0.65 else f"a photo of {word(i)}" for i in range(n)]
    )
    urls = np.array(
        [
            f"http://x/{rng.integers(40)}.png" if rng.random() < 0.02 else f"http://x/{i}.jpg"
            for i in range(n)
        ]
    )
    return Index(np.array([f"u{i}" for i in range(n)]), caps, urls)


def refit(error, split, size):
    """The split config and size an error's suggestion names."""
    overrides = dict(
        o.split("=") for o in str(error).split("Sizes that fit")[1].split(": ", 1)[1].split()
    )
    new = {
        k.removeprefix("data.split."): v
        for k, v in overrides.items()
        if k.startswith("data.split.")
    }
    return OmegaConf.merge(split, new), overrides.get("data.size", size)


def test_errors_name_the_rule_and_suggest_sizes_that_fit():
    idx = clipart_corpus()
    split = OmegaConf.create(
        {"seed": 0, "holdout": 3000, "eval_size": 500, "known_size": 1000, "aux_size": 1000}
    )
    with pytest.raises(ValueError) as err:
        build_splits(idx, split, 1000)
    message = str(err.value)
    assert re.search(
        r"non-member sets need 2000 pairs .* but only \d+ are held out after de-duplication "
        r"dropped \d+ \(caption: \d+, url: \d+\), and the far end of the member pool past "
        r"data.size=1000 holds only \d+ more; raise data.split.holdout or data.corpus.size, or "
        r"lower those sizes, or set data.split.dedup=\[url\]\. Sizes that fit this corpus of 8115 "
        r"pairs: data.split.holdout=",
        message,
    ), message
    fitted = build_splits(idx, *refit(err.value, split, 1000))
    assert len(fitted.members) == 1000 and len(fitted.nonmember_eval) == len(fitted.member_eval) > 0
    assert (
        build_splits(idx, OmegaConf.merge(split, {"dedup": ["url"]}), 1000).dedup_by_rule["url"] > 0
    )

    # Too large a data.size: the pool error names the rule that took pairs from the pool.
    with pytest.raises(
        ValueError,
        match=r"exceeds the member pool of \d+ pairs \(corpus 8115 - holdout 3000 - "
        r"\d+ dropped by de-duplication \(url: \d+, caption: \d+\)\); .* or set "
        r"data.split.dedup=\[url\]",
    ) as err:
        build_splits(idx, OmegaConf.merge(split, {"dedup": ["url", "caption"]}), 4000)
    build_splits(
        idx, *refit(err.value, OmegaConf.merge(split, {"dedup": ["url", "caption"]}), 4000)
    )


@pytest.mark.parametrize("size, pairs", [("10k", 40_000), ("2k", 8115), ("10k", 12_000)])
def test_webdataset_defaults_fit_or_say_what_fits(make_cfg, size, pairs):
    """conf/data/webdataset.yaml's sizes fit a folder of holdout + data.size pairs and more; for a
    smaller folder the error lists sizes that do fit it."""
    split = make_cfg("data=webdataset", small=False).data.split
    idx = index(pairs)
    if pairs >= 20_000 + parse_size(size):
        s = build_splits(idx, split, size)
        assert len(s.nonmember_eval) == 5000 and len(s.members) == parse_size(size)
        return
    with pytest.raises(ValueError, match=f"Sizes that fit this corpus of {pairs} pairs") as err:
        build_splits(idx, split, size)
    fitted = build_splits(idx, *refit(err.value, split, size))
    assert len(fitted.nonmember_eval) > 0


def test_only_rules_other_than_the_default_change_the_target_key(make_cfg):
    cfg = make_cfg()
    spec = TrainSpec.from_cfg(cfg)
    key = target_key(spec, "corpus", cfg.data.split, cfg.data.size)
    legacy = OmegaConf.masked_copy(
        cfg.data.split, ["seed", "holdout", "eval_size", "known_size", "aux_size"]
    )
    assert (
        target_key(spec, "corpus", legacy, cfg.data.size) == key
    )  # keys from before data.split.dedup
    swapped = make_cfg("data.split.dedup=[url,caption]")
    assert target_key(spec, "corpus", swapped.data.split, cfg.data.size) == key
    other = make_cfg("data.split.dedup=[url]")
    assert target_key(spec, "corpus", other.data.split, cfg.data.size) != key


def test_validation_pairs_sit_in_no_other_set_and_leave_the_evaluation_pairs_alone():
    idx = index(1000)
    base = build_splits(idx, SPLIT, 300)
    val = build_splits(idx, OmegaConf.merge(SPLIT, {"validation": 60}), 300)
    swapped = build_splits(
        idx, OmegaConf.merge(SPLIT, {"validation": 60, "scored": "validation"}), 300
    )
    for name in ("members", "member_eval", "nonmember_eval", "nonmember_known", "aux_pool"):
        assert np.array_equal(getattr(val, name), getattr(base, name)), name
    assert np.array_equal(swapped.nonmember_known, base.nonmember_known)
    assert np.array_equal(swapped.aux_pool, base.aux_pool)
    assert (
        len(swapped.member_eval) == len(swapped.nonmember_eval) == 60
        and swapped.scored == "validation"
    )
    assert np.isin(swapped.member_eval, base.members).all()  # trained on
    others = np.concatenate(
        [base.member_eval, base.nonmember_eval, base.nonmember_known, base.aux_pool]
    )
    assert not np.isin(np.concatenate([swapped.member_eval, swapped.nonmember_eval]), others).any()
    assert not np.isin(swapped.nonmember_eval, base.members).any()
    assert (
        not np.isin(swapped.nonmember_eval, val.spare).any()
        and len(val.spare) == len(base.spare) - 60
    )


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"scored": "validation"}, r"data.split.scored='validation': needs validation pairs"),
        (
            {"scored": "test", "validation": 10},
            r"data.split.scored='test': must be eval or validation",
        ),
        (
            {"validation": 250},
            r"data.split.validation=250: needs 250 trained members beside member_eval",
        ),
        (
            {"validation": 500},
            r"data.split.validation=500: leaves no member of data.size=300 to score",
        ),
    ],
)
def test_bad_validation_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        build_splits(index(1000), OmegaConf.merge(SPLIT, changes), 300)
