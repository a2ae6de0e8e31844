"""scores.parquet: its round trip and refusals, the most exposed members, and on a real job: its
alignment with the features and results.json, and the W&B table (the report's recomputation check
is in tests/report/test_checks.py)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mia import tracking
from mia.data.splits import MEMBER_EVAL, NONMEMBER_EVAL, SCORED
from mia.evaluation import metrics, results, scores
from mia.features import SplitFeatures
from mia.pipeline import prepare


def _features(rng, n_members=7, n_nonmembers=5):
    sizes = {MEMBER_EVAL: n_members, NONMEMBER_EVAL: n_nonmembers}
    return {
        s: SplitFeatures(
            np.array([f"{s[:3]}{i:04x}" for i in range(n)]),
            None,
            None,
            rng.normal(size=n).astype(np.float32),
        )
        for s, n in sizes.items()
    }


def _frame(rng, **sizes):
    feats = _features(rng, **sizes)
    captions = {s: [f"a caption, «{s}» {i}" for i in range(len(feats[s].uids))] for s in SCORED}
    captions[MEMBER_EVAL][0] = ""  # an empty caption is a caption
    n_m, n_n = (len(feats[s].uids) for s in SCORED)
    attack_scores = {
        "csa": (feats[MEMBER_EVAL].cos, feats[NONMEMBER_EVAL].cos),  # float32 in
        "wsa_gomez": (rng.normal(size=n_m) * 1e-300, rng.normal(size=n_n)),  # tiny float64s
        "lira": (np.arange(n_m), -np.arange(n_n)),
    }  # integers
    return feats, captions, attack_scores, scores.frame(feats, captions, attack_scores)


def test_round_trip_is_bit_for_bit_with_the_schema_types(tmp_path):
    feats, captions, attack_scores, df = _frame(np.random.default_rng(0))
    path = scores.write(tmp_path / "scores.parquet", df)
    types = {f.name: str(f.type) for f in pq.read_schema(path)}
    assert types == {
        "uid": "string",
        "set": "string",
        "label": "int8",
        "caption": "string",
        "cos": "double",
        "csa": "double",
        "wsa_gomez": "double",
        "lira": "double",
    }
    back = scores.load(path)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    assert list(back["uid"]) == [*feats[MEMBER_EVAL].uids, *feats[NONMEMBER_EVAL].uids]
    assert list(back["set"]) == [MEMBER_EVAL] * 7 + [NONMEMBER_EVAL] * 5
    assert back["label"].dtype == np.int8 and list(back["label"]) == [1] * 7 + [0] * 5
    assert list(back["caption"]) == captions[MEMBER_EVAL] + captions[NONMEMBER_EVAL]
    cos = np.concatenate([feats[s].cos for s in SCORED]).astype(np.float64)
    assert back["cos"].dtype == np.float64 and back["cos"].to_numpy().tobytes() == cos.tobytes()
    assert scores.attack_columns(back) == ["csa", "wsa_gomez", "lira"]
    for name, (m, n) in attack_scores.items():
        assert (
            back[name].to_numpy().tobytes() == np.concatenate([m, n]).astype(np.float64).tobytes()
        ), name


def test_the_version_is_stored_under_the_documented_key(tmp_path):
    *_, df = _frame(np.random.default_rng(0))
    path = scores.write(tmp_path / "scores.parquet", df)
    assert (
        pq.read_schema(path).metadata[b"mia.scores.schema_version"] == b"1"
    )  # docs/design.md §10.1


def test_misaligned_attacks_and_foreign_files_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    feats = _features(rng)
    captions = {s: ["c"] * len(feats[s].uids) for s in SCORED}
    with pytest.raises(
        ValueError, match=r"attack.wsa: \(6,\) scores for the 7 pairs of member_eval"
    ):
        scores.frame(feats, captions, {"wsa": (np.zeros(6), np.zeros(5))})
    with pytest.raises(ValueError, match="attack.wsa: .* the 5 pairs of nonmember_eval"):
        scores.check_aligned(
            "wsa", np.zeros(7), np.zeros((5, 1)), {MEMBER_EVAL: 7, NONMEMBER_EVAL: 5}
        )
    with pytest.raises(ValueError, match="attack.cos: the name is a fixed column"):
        scores.frame(feats, captions, {"cos": (np.zeros(7), np.zeros(5))})
    pd.DataFrame({"uid": ["a"]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ValueError, match="other.parquet: no mia.scores.schema_version"):
        scores.load(tmp_path / "other.parquet")


def test_most_exposed_ranks_members_by_mean_percentile():
    # Two attacks on different scales; the non-members score highest of all and must never be
    # returned.
    df = pd.DataFrame(
        {
            "uid": list("abcdefgh"),
            "set": [MEMBER_EVAL] * 5 + [NONMEMBER_EVAL] * 3,
            "label": np.array([1] * 5 + [0] * 3, np.int8),
            "caption": list("ABCDEFGH"),
            "cos": np.zeros(8),
            "x": [1.0, 5.0, 3.0, 4.0, 2.0, 9.0, 9.5, 9.9],  # member order b d c e a
            "y": [400.0, 100.0, 300.0, 200.0, 500.0, 990, 995, 999],
        }
    )  # member order e a c d b
    value = scores.exposure(df)
    # percentiles among all 8 pairs: x ranks a..e 1,5,3,4,2 and y ranks 4,1,3,2,5, each / 8
    assert value[:5] == pytest.approx(np.array([5, 6, 6, 6, 7]) / 16)
    top = scores.most_exposed(df, k=3)
    assert list(top["uid"]) == ["e", "b", "c"]  # b, c and d tie: the table's order decides
    assert set(top["label"]) == {1} and top["exposure"].is_monotonic_decreasing
    assert list(scores.most_exposed(df, k=50)["uid"]) == [
        "e",
        "b",
        "c",
        "d",
        "a",
    ]  # k > members: all of them
    # one attack: its own order
    assert list(scores.most_exposed(df.drop(columns="y"), k=2)["uid"]) == ["b", "d"]
    with pytest.raises(ValueError, match="no attack columns"):
        scores.most_exposed(df.drop(columns=["x", "y"]))


def test_exposed_members_table_in_an_offline_run(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    _, _, _, df = _frame(np.random.default_rng(1), n_members=60, n_nonmembers=60)
    top = scores.most_exposed(df)
    images = {u: Image.new("RGB", (300, 200), (i, 0, 0)) for i, u in enumerate(df["uid"][:60])}
    run = tracking.start(make_cfg("logger=wandb"), tmp_path)
    try:
        tracking.log_exposed(run, top, images)
    finally:
        tracking.finish(run)
    table = _exposed_table(tmp_path)
    assert table["columns"] == [
        "uid",
        "thumbnail",
        "caption",
        "exposure",
        "csa",
        "wsa_gomez",
        "lira",
    ]
    assert [r[0] for r in table["data"]] == list(top["uid"]) and len(top) == 50
    assert [r[3] for r in table["data"]] == pytest.approx(list(top["exposure"]))


def _exposed_table(out_dir) -> dict:
    """The exposed_members table as the offline run keeps it (its images are in the run's
    artifact)."""
    files = list(out_dir.glob("wandb/offline-run-*/files/media/table/exposed_members_*.table.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


# --- on a real job (the session's default job: tests/conftest.py) -------------------------------


@pytest.mark.slow
def test_job_scores_agree_with_features_and_results(default_job):
    cfg, path = default_job
    res = results.load(path)
    assert res["scores"] == "scores.parquet"
    df = scores.load(results.scores_path(res, path.parent))
    _, _, splits, _ = prepare(cfg)  # the features' uid order is the splits'
    assert list(df["uid"]) == [*splits.member_eval, *splits.nonmember_eval]
    assert scores.attack_columns(df) == ["csa"] and df["caption"].str.len().min() > 0
    labels = df["label"].to_numpy()
    assert df["csa"].equals(df["cos"])  # CSA's score is the cosine
    auc = metrics.roc_metrics(df["csa"], labels, n_bootstrap=0)["auc"]
    assert auc == res["attacks"]["csa"]["auc"]
    cos = df["cos"].to_numpy()
    assert cos[labels == 1].mean() - cos[labels == 0].mean() == res["gap"]["value"]


@pytest.mark.slow
def test_job_logs_the_most_exposed_members(default_job):
    _, path = default_job
    table = _exposed_table(path.parent)
    df = scores.load(path.parent / "scores.parquet")
    assert table["columns"] == ["uid", "thumbnail", "caption", "exposure", "csa"]
    assert len(table["data"]) == 50  # 100 members scored: the top 50
    assert [r[0] for r in table["data"]] == list(scores.most_exposed(df)["uid"])
