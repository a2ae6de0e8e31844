"""data.shift: i.i.d. non-members mixed pair by pair with the shifted sibling corpus
(docs/design.md §2.6), from the generator through the splits to the job and the sweep report."""

import json

import numpy as np
import pytest

from mia.data.corpus import load_shifted
from mia.data.dedup import normalise_caption
from mia.data.shards import Index
from mia.data.splits import build_splits
from mia.data.synthetic import SHIFT_PARTS, make_sample, mixed_sample, replaced_uid, swaps
from mia.pipeline import prepare, run
from mia.report import build_report
from mia.report.rows import load_rows, report_row
from mia.validate import build
from tests.helpers.sweeps import fake_job, write_sweep


def same_pair(a, b) -> bool:
    return a[1] == b[1] and a[2] == b[2] and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))


def swapped(n, shift, parts=SHIFT_PARTS, seed=0) -> dict:
    """{part: indices of the first n pairs whose part the shift swaps}."""
    got = [swaps(i, seed=seed, shift=shift, shift_parts=parts) for i in range(n)]
    return {part: {i for i, s in enumerate(got) if part in s} for part in SHIFT_PARTS}


def test_shift_zero_is_the_iid_pair_and_shift_one_the_siblings():
    for i in range(40):
        iid, shifted = make_sample(i, seed=3), make_sample(i, seed=3, style="shifted")
        assert same_pair(mixed_sample(i, seed=3, shift=0.0, shift_parts=SHIFT_PARTS), iid)
        assert same_pair(mixed_sample(i, seed=3, shift=1.0, shift_parts=SHIFT_PARTS), shifted)
    assert swapped(2000, 0.0) == {"image": set(), "caption": set()}
    assert swapped(2000, 1.0) == {"image": set(range(2000)), "caption": set(range(2000))}


def test_half_shift_swaps_about_half_each_part_independently_and_nested():
    n = 4000
    half, quarter = swapped(n, 0.5), swapped(n, 0.25)
    # Binomial(4000, 1/2) has sd 31.6 and Binomial(4000, 1/4) sd 27.4: 5 sd either side.
    for part in SHIFT_PARTS:
        assert abs(len(half[part]) - n / 2) < 5 * 31.6
        assert quarter[part] <= half[part]  # what a shift swaps, a larger one swaps too
    assert abs(len(half["image"] & half["caption"]) - n / 4) < 5 * 27.4  # independent coins
    # The caption template and palette follow the swaps: a shifted caption credits, an i.i.d. one
    # says "photo by".
    caps = [mixed_sample(i, seed=0, shift=0.5, shift_parts=SHIFT_PARTS)[1] for i in range(300)]
    assert [c.startswith("Image showing") for c in caps] == [
        i in half["caption"] for i in range(300)
    ]
    assert all(("photo by" in c) != c.startswith("Image showing") for c in caps)


def test_image_only_and_caption_only_shift_change_only_that_part():
    for parts, prefix in ((("image",), "mxi"), (("caption",), "mxc")):
        moved = swapped(200, 0.5, parts)
        assert (
            moved[parts[0]] == swapped(200, 0.5)[parts[0]]
        )  # the very pairs the two-part shift swaps
        assert not moved["caption" if parts == ("image",) else "image"]
        for i in range(200):
            img, cap, meta = mixed_sample(i, seed=0, shift=0.5, shift_parts=parts)
            iid, other = make_sample(i, seed=0), make_sample(i, seed=0, style="shifted")
            if i not in moved[parts[0]]:
                assert same_pair((img, cap, meta), iid)
                continue
            assert (
                meta["uid"] == prefix + iid[2]["uid"][3:]
                and replaced_uid(meta["uid"]) == iid[2]["uid"]
            )
            want_img, want_cap = (other, iid) if parts == ("image",) else (iid, other)
            assert np.array_equal(np.asarray(img), np.asarray(want_img[0])) and cap == want_cap[1]
            assert meta["url"] == want_img[2]["url"] and meta["caption"] == cap


def shifted_splits(make_cfg, cache_dir, *overrides):
    cfg = make_cfg(*overrides)
    data = build(cfg.data, "data")
    members = data.member_corpus(cache_dir)
    nonmembers = load_shifted(data.corpus, members, cache_dir, data.shift, data.shift_parts)
    iid = build_splits(members.index, cfg.data.split, cfg.data.size)
    return (
        members,
        nonmembers,
        iid,
        build_splits(members.index, cfg.data.split, cfg.data.size, shifted_index=nonmembers.index),
    )


SETS = ("members", "member_eval", "nonmember_eval", "nonmember_known", "aux_pool", "aux_is_member")


def test_shifted_index_at_zero_gives_the_iid_splits(make_cfg, small_corpus):
    members, nonmembers, iid, shifted = shifted_splits(make_cfg, small_corpus, "data.shift=0")
    assert np.array_equal(nonmembers.index.uids, members.index.uids)
    assert np.array_equal(nonmembers.index.captions, members.index.captions)
    assert nonmembers.shards == members.shards  # nothing swapped, nothing generated
    for name in SETS:
        assert np.array_equal(getattr(iid, name), getattr(shifted, name)), name


def test_full_shift_swaps_every_nonmember_and_no_member(make_cfg, small_corpus):
    members, nonmembers, iid, shifted = shifted_splits(make_cfg, small_corpus, "data.shift=1")
    assert np.array_equal(iid.members, shifted.members) and np.array_equal(
        iid.member_eval, shifted.member_eval
    )
    assert np.array_equal(iid.aux_pool[iid.aux_is_member], shifted.aux_pool[shifted.aux_is_member])
    non = np.concatenate([shifted.nonmember_eval, shifted.nonmember_known])
    assert all(u.startswith("ood") for u in non)
    # Pair for pair the i.i.d. job's non-members, swapped: none was lost to de-duplication.
    assert [replaced_uid(u) for u in shifted.nonmember_eval] == list(iid.nonmember_eval)
    # Never a member's twin, by uid, caption or URL; read back from the swapped shards.
    ix = nonmembers.index
    row = {u: i for i, u in enumerate(ix.uids)}
    caps = {
        normalise_caption(c)
        for c in members.index.captions[np.isin(members.index.uids, shifted.members)]
    }
    urls = set(members.index.urls[np.isin(members.index.uids, shifted.members)])
    assert not np.isin(non, shifted.members).any()
    assert not caps & {normalise_caption(ix.captions[row[u]]) for u in non}
    assert not urls & {ix.urls[row[u]] for u in non}
    assert all(ix.captions[row[u]].startswith("Image showing") for u in non)


def index(n):
    """n pairs with distinct normalised captions (digits vanish in normalisation: spell them)."""
    word = ["".join("abcdefghij"[int(d)] for d in str(i)) for i in range(n)]
    return Index(
        np.array([f"u{i}" for i in range(n)]),
        np.array([f"a caption with {w}q" for w in word]),
        np.array([f"http://x/u{i}.jpg" for i in range(n)]),
    )


def test_shifted_splits_refuse_overlap_and_drop_member_twins():
    from omegaconf import OmegaConf

    split = OmegaConf.create(
        {"seed": 0, "holdout": 300, "eval_size": 50, "known_size": 100, "aux_size": 100}
    )
    members = index(1000)
    iid = build_splits(members, split, 100)
    row = {u: i for i, u in enumerate(members.uids)}
    # A shifted pair whose caption is a member's: dropped like any twin across the boundary.
    twin = Index(members.uids.copy(), members.captions.astype(object), members.urls.copy())
    twin.captions[row[iid.nonmember_eval[0]]] = members.captions[row[iid.members[0]]]
    twin.captions = twin.captions.astype(str)
    s = build_splits(members, split, 100, shifted_index=twin)
    assert iid.nonmember_eval[0] not in s.nonmember_eval
    assert s.dedup_by_rule["caption"] == iid.dedup_by_rule["caption"] + 1
    assert np.array_equal(s.members, iid.members)
    # A shifted pair that claims a member's uid (unlike its caption and URL) is refused, whether the
    # shifted index holds that uid twice or, its own row renamed, once.
    clash = Index(members.uids.copy(), members.captions, members.urls)
    clash.uids[row[iid.nonmember_eval[0]]] = iid.members[5]
    with pytest.raises(ValueError, match="shifted member corpus .*: 1 uids occur more than once"):
        build_splits(members, split, 100, shifted_index=clash)
    clash.uids[row[iid.members[5]]] = "renamed"
    with pytest.raises(ValueError, match="1 uids are in both members and nonmember_eval"):
        build_splits(members, split, 100, shifted_index=clash)
    with pytest.raises(ValueError, match="row for row"):
        build_splits(members, split, 100, shifted_index=index(999))


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["data.shift=1.5"], r"data.shift=1.5: must be a number in \[0, 1\]"),
        (["data.shift=-0.1"], r"data.shift=-0.1: must be a number in \[0, 1\]"),
        (["data.shift=lots"], r"data.shift='lots': must be a number in \[0, 1\]"),
        (
            ["data.shift_parts=[foo]"],
            r"data.shift_parts=\['foo'\]: must be a non-empty list of distinct parts out "
            r"of \[image,caption\]",
        ),
        (["data.shift_parts=[]"], r"data.shift_parts=\[\]: must be"),
        (["data.shift_parts=[image,image]"], r"data.shift_parts=\['image', 'image'\]: must be"),
        (["data.shift_parts=caption"], r"data.shift_parts='caption': must be"),
        (
            ["data.nonmembers=ood", "data.shift=0.5"],
            r"data.shift=0.5: mixes .* data.nonmembers='ood'",
        ),
        (
            ["data=webdataset", "data.path={shards}", "data.shift=0.5"],
            r"data.shift=0.5: .* data=webdataset",
        ),
        (["data=glyphs", "data.shift=0.5"], r"data.shift=0.5: .* data=glyphs"),
        (
            [
                "data=audit",
                "data.members={shards}",
                "data.nonmembers_path={shards}",
                "data.size=300",
                "data.shift=0.5",
            ],
            r"data.shift=0.5: .* data=audit",
        ),
    ],
)
def test_bad_shift_settings_are_refused_naming_the_key(
    make_cfg, tmp_path, tmp_path_factory, overrides, message
):
    folders = {"data=audit", "data=webdataset"} & set(
        overrides
    )  # no corpus: no test-size corpus overrides
    shards = tmp_path_factory.mktemp("shards")  # a folder the job spec finds: it checks it exists
    (shards / "00000.tar").write_bytes(b"")
    overrides = [o.format(shards=shards) for o in overrides]
    with pytest.raises(ValueError, match=message):
        prepare(make_cfg(*overrides, small=not folders))
    assert not (tmp_path / ".cache").exists()  # refused before any corpus is generated


def condition(cfg) -> str:
    return build(cfg.data, "data").condition


def test_condition_and_record_tell_shifts_apart(make_cfg):
    assert (
        condition(make_cfg())
        == condition(make_cfg("data.shift=0", "data.shift_parts=[image]"))
        == "iid"
    )
    assert condition(make_cfg("data.shift=0.25")) == "shift=0.25"
    assert condition(make_cfg("data.shift=1", "data.shift_parts=[image]")) == "image-shift=1"
    assert condition(make_cfg("data.shift=0.1", "data.shift_parts=[caption,image]")) == "shift=0.1"
    assert condition(make_cfg("data.nonmembers=ood")) == "ood"


def fake(shift, parts, aucs, nonmembers=None, swapped=None):
    cond = nonmembers or ("iid" if shift == 0 else f"shift={shift:g}")
    return fake_job(
        1000, 40, 0.1, aucs=aucs, nonmembers=cond, shift=shift, shift_parts=parts, swapped=swapped
    )


def test_report_row_subtracts_the_jobs_blind_auc():
    row = report_row(
        fake(0.5, ["image", "caption"], {"csa": 0.9, "lira": 0.8, "blind": 0.75}).record, "0"
    )
    assert row["csa/auc_minus_blind"] == pytest.approx(0.15) and row[
        "lira/auc_minus_blind"
    ] == pytest.approx(0.05)
    assert "blind/auc_minus_blind" not in row and (row["shift"], row["shift_parts"]) == (
        0.5,
        "image+caption",
    )
    assert not any(
        k.endswith("auc_minus_blind") for k in report_row(fake(0.5, None, {"csa": 0.9}).record, "1")
    )


def test_report_draws_auc_against_shift_with_a_row_per_shift(tmp_path):
    shifts = (0, 0.1, 0.25, 0.5, 1)
    runs = [
        fake(
            s,
            None if s == 0 else ["image", "caption"],
            {"csa": 0.6 + 0.4 * s, "blind": 0.5 + 0.5 * s},
        )
        for s in shifts
    ]
    runs.append(fake(None, None, {"csa": 1.0, "blind": 1.0}, nonmembers="ood"))
    write_sweep(tmp_path, runs)
    build_report(tmp_path, wandb_log=False)
    assert (tmp_path / "auc_vs_shift.png").stat().st_size > 1000
    rows = load_rows(tmp_path)
    assert [r["nonmembers"] for r in rows] == [
        "iid",
        "shift=0.1",
        "shift=0.25",
        "shift=0.5",
        "shift=1",
        "ood",
    ]
    report = (tmp_path / "report.md").read_text()
    assert "## AUC minus blind AUC" in report and "## AUC against the shift" in report
    shift_table = report.split("## AUC against the shift")[1].split("##")[0]
    assert [
        line.split(" | ")[0]
        for line in shift_table.splitlines()
        if line.startswith("| ") and "±" in line
    ] == ["| 0", "| 0.1", "| 0.25", "| 0.5", "| 1"]
    assert "| 1000 | 40 | shift=0.25 | +0.075 |" in report  # csa 0.7 - blind 0.625
    header, *lines = (tmp_path / "results.csv").read_text().splitlines()
    col = header.split(",").index("csa/auc_minus_blind")
    assert [float(line.split(",")[col]) for line in lines] == pytest.approx(
        [0.6 + 0.4 * s - (0.5 + 0.5 * s) for s in shifts] + [0.0]
    )


def test_report_sets_each_attacks_auc_on_the_unswapped_nonmembers_beside_its_auc(tmp_path):
    """The shift table: every attack's AUC and, where the shift swapped some non-members, its AUC on
    the others with its interval and their count; then each attack's difference from CSA on those
    non-members (at shift 0 on all of them, vs_csa itself)."""
    from tests.helpers.sweeps import PAIRS, scores_with_auc

    swapped = (
        np.arange(PAIRS) < PAIRS // 2
    )  # the non-members every attack scores lowest: the easy half
    runs = [
        fake(0, None, {"csa": 0.6, "wsa": 0.55}),
        fake(
            0.5,
            ["caption"],
            {"csa": 0.8, "wsa": 0.9},
            nonmembers="caption-shift=0.5",
            swapped=swapped,
        ),
    ]
    write_sweep(tmp_path, runs)
    build_report(tmp_path, wandb_log=False)
    row = next(r for r in load_rows(tmp_path) if r["shift"])
    member, nonmember = scores_with_auc(0.9)
    by_hand = float(np.mean(member[:, None] > nonmember[~swapped][None, :]))
    assert row["wsa/auc_unshifted"] == pytest.approx(by_hand) and row["n_unshifted"] == PAIRS // 2
    table = (
        (tmp_path / "report.md").read_text().split("## AUC against the shift")[1].split("\n## ")[0]
    )
    lines = [line for line in table.splitlines() if line.startswith("| 0")]
    assert lines[0].startswith("| 0 | all | 0.600 ± ") and "unshifted" not in lines[0]
    assert (
        lines[1].startswith(f"| 0.5 | {PAIRS // 2} | 0.800 ± ")
        and f"(unshifted {by_hand:.3f} [" in lines[1]
    )
    vs = [line for line in table.splitlines() if line.startswith("| shift | wsa |")]
    delta = row["wsa/delta_auc_vs_csa_unshifted"]
    zero, shifted = table.split(vs[0])[1].splitlines()[
        2:4
    ]  # after the header's rest and the separator
    assert shifted.startswith("| 0.5 | ") and f"{delta:+.3f} [" in shifted
    assert (
        f"{load_rows(tmp_path)[0]['wsa/delta_auc_vs_csa']:+.3f} [" in zero
    )  # shift 0: vs_csa itself


@pytest.mark.slow
def test_shift_zero_is_the_iid_job_and_a_caption_shift_feeds_blind(make_cfg, small_target):
    attacks = "attack=[csa,blind]"
    iid_uids = prepare(make_cfg(attacks))[2].nonmember_eval
    assert np.array_equal(prepare(make_cfg(attacks, "data.shift=0"))[2].nonmember_eval, iid_uids)
    iid = json.loads(run(make_cfg(attacks)).read_text())
    zero = json.loads(run(make_cfg(attacks, "data.shift=0")).read_text())
    caption = json.loads(
        run(make_cfg(attacks, "data.shift=1", "data.shift_parts=[caption]")).read_text()
    )
    assert zero["target"]["cache_hit"] and zero["data"]["features_cache_hit"]
    assert (
        zero["target"]["cache_key"] == iid["target"]["cache_key"] == caption["target"]["cache_key"]
    )
    assert caption["target"]["cache_hit"]  # members are untouched: one target for the sweep
    for name in ("csa", "blind"):
        assert zero["attacks"][name]["auc"] == iid["attacks"][name]["auc"]
    assert zero["data"]["nonmembers"] == "iid" and (
        zero["data"]["shift"],
        zero["data"]["shift_parts"],
    ) == (0.0, None)
    assert caption["data"]["nonmembers"] == "caption-shift=1" and caption["data"][
        "shift_parts"
    ] == ["caption"]
    assert caption["attacks"]["blind"]["auc"] > 0.9


@pytest.mark.slow
def test_a_shifted_job_scores_each_attack_on_its_unswapped_nonmembers_too(make_cfg, small_target):
    """auc_unshifted is the AUC of the members against the non-members whose uid is still the i.i.d.
    corpus's (`syn…`: a swapped pair's is `mxi…`, `mxc…` or `ood…`), counted by hand from
    scores.parquet; a job that shifts nothing has none of it."""
    from sklearn.metrics import roc_auc_score

    from mia.evaluation import results, scores

    attacks = "attack=[csa,blind]"
    path = run(make_cfg(attacks, "data.shift=0.5"))
    record = json.loads(path.read_text())
    table = scores.load(path.parent / record["scores"])
    kept = (table["label"] == 1) | table["uid"].str.startswith("syn")
    assert 0 < (~kept).sum() < (table["label"] == 0).sum()
    by_hand = {
        name: roc_auc_score(table["label"][kept], table[name][kept]) for name in ("csa", "blind")
    }
    for name, auc in by_hand.items():
        entry = record["attacks"][name]
        assert entry["auc_unshifted"] == pytest.approx(auc, abs=1e-12)
        assert entry["n_unshifted"] == (kept & (table["label"] == 0)).sum()
        lo, hi = entry["auc_unshifted_ci95"]
        assert lo <= auc <= hi
    vs = record["attacks"]["blind"]["vs_csa_unshifted"]
    assert vs["delta_auc"] == pytest.approx(by_hand["blind"] - by_hand["csa"], abs=1e-12)
    # blind reads captions: the swapped ones give it its edge, which the unswapped non-members take
    # away
    assert by_hand["blind"] < record["attacks"]["blind"]["auc"]
    zero = json.loads(run(make_cfg(attacks, "data.shift=0")).read_text())
    assert not any(
        key in entry for entry in zero["attacks"].values() for key in results.UNSHIFTED_KEYS
    )
