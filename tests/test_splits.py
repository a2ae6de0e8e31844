import numpy as np
import pytest
from omegaconf import OmegaConf

from mia.data.shards import Index
from mia.data.splits import build_splits, check_disjoint, normalise_caption

SPLIT = OmegaConf.create({"seed": 0, "holdout": 300, "eval_size": 50, "known_size": 100, "aux_size": 100})


def word(i):
    """A letters-only word unique to i (digits vanish in caption normalisation)."""
    return "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in str(i)) + "q"


def index(n, prefix="u", caption=lambda i: f"a caption with word {word(i)}"):
    uids = np.array([f"{prefix}{i}" for i in range(n)])
    caps = np.array([caption(i) for i in range(n)])
    urls = np.array([f"http://x/{prefix}{i}.jpg" for i in range(n)])
    return Index(uids, caps, urls)


def all_sets(s):
    return dict(members=s.members, member_eval=s.member_eval, nonmember_eval=s.nonmember_eval,
                nonmember_known=s.nonmember_known, aux=s.aux_pool)


def test_splits_are_disjoint_and_nested():
    idx = index(1000)
    small, large = build_splits(idx, SPLIT, 100), build_splits(idx, SPLIT, "500")
    for s in (small, large):
        non = np.concatenate([s.nonmember_eval, s.nonmember_known, s.aux_pool[~s.aux_is_member]])
        assert not np.intersect1d(s.members, non).size
        assert not np.intersect1d(s.member_eval, np.concatenate([s.nonmember_known, s.aux_pool])).size
        assert np.isin(s.member_eval, s.members).all()            # eval members are trained on
        assert np.isin(s.aux_pool[s.aux_is_member], s.members).all()
        assert len(s.nonmember_eval) == len(s.member_eval) == 50
    assert np.array_equal(large.members[:100], small.members)     # nested prefixes
    assert np.array_equal(small.member_eval, large.member_eval)
    assert np.array_equal(small.nonmember_eval, large.nonmember_eval)


def test_dedup_drops_pairs_on_both_sides():
    # Captions differing only in digits and punctuation normalise to the same text.
    idx = index(1000, caption=lambda i: f"The photo #{i % 400}!" if i % 7 == 0 else f"unique {word(i)} pic")
    s = build_splits(idx, SPLIT, 100)
    assert s.dedup_dropped > 0
    caps = dict(zip(idx.uids, (normalise_caption(c) for c in idx.captions)))
    member_caps = {caps[u] for u in s.members}
    assert not member_caps & {caps[u] for u in np.concatenate([s.nonmember_eval, s.nonmember_known])}


def test_normalise_caption():
    assert normalise_caption("  The RED circle, #42 is on the left!") == "red circle left"


def test_size_larger_than_pool():
    with pytest.raises(ValueError, match=r"data.size='900' \(900\) exceeds the member pool of 700"):
        build_splits(index(1000), SPLIT, "900")


def test_eval_larger_than_size():
    with pytest.raises(ValueError, match="eval_size=50 exceeds data.size=20"):
        build_splits(index(1000), SPLIT, 20)


def test_too_few_held_out():
    cfg = OmegaConf.merge(SPLIT, {"known_size": 400})
    with pytest.raises(ValueError, match="raise data.split.holdout"):
        build_splits(index(1000), cfg, 100)


def test_overlapping_uids_are_refused():
    idx = index(1000)
    idx.uids[500] = idx.uids[10]          # one uid on two pairs: could be member and non-member
    with pytest.raises(ValueError, match="occur more than once"):
        build_splits(idx, SPLIT, 100)
    with pytest.raises(ValueError, match="both members and nonmember_eval"):
        check_disjoint(members=np.array(["a", "b"]), nonmember_eval=np.array(["c", "b"]))


def test_ood_nonmembers_leave_member_pool_unchanged():
    idx, ood = index(1000), index(800, prefix="o", caption=lambda i: f"other style caption v{word(i)}")
    iid, shifted = build_splits(idx, SPLIT, 200), build_splits(idx, SPLIT, 200, nonmember_index=ood)
    assert np.array_equal(iid.members, shifted.members)
    assert all(u.startswith("o") for u in shifted.nonmember_eval)
    assert all(u.startswith("o") for u in shifted.aux_pool[~shifted.aux_is_member])
