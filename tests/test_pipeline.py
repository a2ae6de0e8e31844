"""End to end on a corpus of 1,200 pairs: the default job, the cache, and refusals of bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mia import pipeline
from mia.pipeline import run
from mia.training.shadows import ShadowSet
from tests.helpers.config import SMALL

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

METRIC_KEYS = {
    "auc",
    "auc_std",
    "auc_ci95",
    "tpr_at_fpr_1e-2",
    "tpr_at_fpr_1e-3",
    "oracle_balanced_accuracy",
    "n_members",
    "n_nonmembers",
    "seconds",
}


def test_default_job_end_to_end_with_wandb(default_job):
    _, path = default_job
    res = json.loads(path.read_text())
    assert res["config"]["data"]["size"] == 300
    t = res["target"]
    assert (t["size"], t["epochs"], t["model"], t["cache_hit"]) == (300, 2, "tiny", False)
    assert Path(t["checkpoint"]).is_file()
    trained = Path(t["trained_uids"]).read_text().split()
    assert len(trained) == len(set(trained)) == 300
    assert set(res["gap"]) >= {
        "value",
        "std",
        "ci95",
        "member_mean",
        "nonmember_mean",
        "member_std",
        "nonmember_std",
    }
    assert res["gap"]["value"] == pytest.approx(
        res["gap"]["member_mean"] - res["gap"]["nonmember_mean"]
    )
    csa = res["attacks"]["csa"]
    assert METRIC_KEYS <= set(csa) and csa["n_members"] == csa["n_nonmembers"] == 100
    assert 0 <= csa["auc"] <= 1 and csa["auc_ci95"][0] <= csa["auc"] <= csa["auc_ci95"][1]
    assert "vs_csa" not in csa and [c["fpr_target"] for c in csa["calibrated"]] == [0.01, 0.001]
    assert not any(c["threshold_from_training_pairs"] for c in csa["calibrated"])
    assert (
        set(res["timing"]) == {"train_s", "references_s", "features_s", "attacks_s", "utility_s"}
        and res["timing"]["train_s"] > 0
    )
    assert res["data"]["corrupt_skipped"] == 0
    assert (path.parent / "scores_csa.png").stat().st_size > 1000
    runs = list((path.parent / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_second_run_hits_the_cache(make_cfg, small_corpus, caplog):
    first = json.loads(run(make_cfg()).read_text())
    with caplog.at_level("INFO"):
        second = json.loads(run(make_cfg()).read_text())
    assert not first["target"]["cache_hit"] and second["target"]["cache_hit"]
    assert second["target"]["cache_key"] == first["target"]["cache_key"]
    assert second["timing"]["train_s"] == 0 and second["data"]["features_cache_hit"]
    assert "target cache hit" in caplog.text
    assert second["attacks"]["csa"]["auc"] == first["attacks"]["csa"]["auc"]
    # A different size is a different target.
    third = json.loads(run(make_cfg("data.size=200")).read_text())
    assert (
        third["target"]["cache_key"] != first["target"]["cache_key"]
        and not third["target"]["cache_hit"]
    )


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.size=12q", "data.size='12q' is not a size"),
        ("data.in_memory=sometimes", "data.in_memory=.sometimes.: must be true, false or auto"),
        ("data.split.known_size=100k", "the non-member sets need 100"),
        ("data.nonmembers=other", "data.nonmembers='other'"),
    ],
)
def test_bad_input_is_refused_before_training(make_cfg, tmp_path, small_corpus, override, message):
    with pytest.raises(ValueError, match=message):
        run(make_cfg(override))
    assert not (tmp_path / ".cache" / "targets").exists()


def _cli(tmp_path, *args):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    small = [o for o in SMALL if not o.startswith("data.size=")]  # the sweep sets it
    return subprocess.run(
        [sys.executable, "run.py", *args, *small, f"paths.root_dir={tmp_path}", "logger=none"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_cli_multirun_sweep(tmp_path, small_target):
    proc = _cli(tmp_path, "-m", "data.size=200,300", "attack=csa")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((tmp_path / "outputs" / "multiruns").glob("*/*/results.json"))
    assert [json.loads(p.read_text())["target"]["size"] for p in results] == [200, 300]
    assert "results: " in proc.stdout
    sweep = results[0].parent.parent
    assert (sweep / "report.md").exists() and (
        sweep / "results.csv"
    ).exists()  # the Hydra callback ran
    assert (
        "metrics recomputed from scores.parquet: 2 jobs, all agree"
        in (sweep / "report.md").read_text()
    )


def test_cli_bad_size_fails_with_named_key(tmp_path):
    proc = _cli(tmp_path, "data.size=lots")
    assert proc.returncode != 0
    assert "data.size='lots' is not a size" in proc.stderr


def _contexts(monkeypatch) -> list:
    """The attack contexts the jobs run from now on hand their attacks."""
    seen, attack = [], pipeline._attack
    monkeypatch.setattr(
        pipeline,
        "_attack",
        lambda job, ctx, *a, **k: (seen.append(ctx), attack(job, ctx, *a, **k))[1],
    )
    return seen


def test_a_job_without_shadow_attacks_trains_no_reference_models(
    make_cfg, small_target, monkeypatch
):
    seen = _contexts(monkeypatch)
    run(make_cfg())
    assert seen[0].references == {}


def test_shadow_attack_through_the_pipeline(make_cfg, small_target, monkeypatch):
    """A reference-model attack end to end: shadows trained through the cached stage (not exported)
    before the attacks run, which receive them trained; their pool embeddings cached beside them,
    diagnostics nested under the attack's metrics."""
    seen = _contexts(monkeypatch)
    path = run(make_cfg("attack=lira", "attack.lira.num_shadows=2"))
    (trained,) = seen[0].references.values()  # not a trainer: the set, trained
    assert isinstance(trained, ShadowSet) and trained.trained == 2
    res = json.loads(path.read_text())
    lira = res["attacks"]["lira"]
    assert res["schema_version"] == 3 and 0 <= lira["auc"] <= 1
    table = pd.read_parquet(
        path.parent / res["scores"]
    )  # compared with CSA though the job did not run csa
    assert lira["vs_csa"]["delta_auc"] == pytest.approx(
        lira["auc"] - roc_auc_score(table["label"], table["cos"])
    )
    assert lira["calibrated"] is None and "shadow" in lira["calibrated_skipped"]
    diag = lira["diagnostics"]
    assert diag["num_shadows"] == 2 and diag["shadows_trained"] == 2 and "num_shadows" not in lira
    for shadow in map(Path, diag["shadow_dirs"]):
        assert (shadow / "DONE").exists() and not (shadow / "open_clip").exists()
        assert (shadow / "history.csv").exists() and not (shadow / "loss.png").exists()
        assert len(list((shadow / "features").glob("pool-*.npz"))) == 1
    assert Path(res["target"]["open_clip"], "open_clip_config.json").exists()


def test_reference_models_of_your_own_score_as_the_shadows_they_are(
    make_cfg, small_target, tmp_path
):
    """shadows.paths: the shadows a job trained, given back as reference models (each model.pt with
    the uid list it trained on), score lira and rmia bit for bit as in the job that trained them;
    none trains, and the diagnostics say where they came from."""
    attacks = ["attack=[lira,rmia]", "attack.lira.num_shadows=2", "attack.rmia.num_shadows=2"]
    attacks.append("attack.rmia.offline_a=0.5")  # auto tunes a on >= 4 models
    first = run(make_cfg(*attacks))
    trained = json.loads(first.read_text())
    dirs = trained["attacks"]["lira"]["diagnostics"]["shadow_dirs"]
    assert trained["attacks"]["rmia"]["diagnostics"]["shadow_dirs"] == dirs
    refs = []
    for i, shadow in enumerate(map(Path, dirs)):  # as an auditor would hand them over
        uids = tmp_path / f"ref{i}.txt"
        uids.write_text((shadow / "trained_uids.txt").read_text())
        refs.append(f"{{checkpoint: '{shadow / 'model.pt'}', uids: '{uids}'}}")
    second = run(make_cfg(*attacks, f"shadows.paths=[{','.join(refs)}]"))
    given = json.loads(second.read_text())
    for name in ("lira", "rmia"):
        assert given["attacks"][name]["auc"] == trained["attacks"][name]["auc"]
        diag = given["attacks"][name]["diagnostics"]
        assert diag["shadows_size"] == "paths" and diag["shadows_trained"] == 0
        assert diag["num_shadows"] == 2 and diag["shadow_dirs"] != dirs
    before = pd.read_parquet(first.parent / trained["scores"])
    after = pd.read_parquet(second.parent / given["scores"])
    pd.testing.assert_frame_equal(before, after, check_exact=True)


def test_validation_pairs_are_scored_in_place_of_the_evaluation_pairs_on_the_same_target(
    make_cfg, small_target
):
    evaluation = json.loads(run(make_cfg("analysis.calibrated.fpr_targets=[0.05]")).read_text())
    validation = json.loads(
        run(make_cfg("data.split.validation=40", "data.split.scored=validation")).read_text()
    )
    assert (
        validation["target"]["cache_key"] == evaluation["target"]["cache_key"]
        and validation["target"]["cache_hit"]
    )
    assert evaluation["data"]["scored"] == "eval" and validation["data"]["scored"] == "validation"
    assert (
        validation["attacks"]["csa"]["n_members"]
        == validation["attacks"]["csa"]["n_nonmembers"]
        == 40
    )
    assert [c["fpr_target"] for c in evaluation["attacks"]["csa"]["calibrated"]] == [0.05]


def test_an_attack_the_data_give_nothing_to_score_with_is_recorded_and_the_others_still_run(
    make_cfg, small_target
):
    """WSA at a lambda no pair reaches: the job records why under `skipped`, with no metrics and no
    scores column of its own, and scores CSA as usual."""
    path = run(make_cfg("attack=[csa,wsa]", "attack.wsa.lam=100"))
    res = json.loads(path.read_text())
    assert list(res["attacks"]) == ["csa"]
    assert res["skipped"]["wsa"].startswith("lam=100: no aux_pool pair reaches")
    table = pd.read_parquet(path.parent / res["scores"])
    assert "csa" in table.columns and "wsa" not in table.columns
    assert (
        "## Not scored\n\n- wsa: lam=100: no aux_pool pair reaches"
        in (path.parent / "report.md").read_text()
    )


def test_a_cap_n_puts_on_eval_size_is_stated_and_recorded(make_cfg, small_target, caplog):
    """At N = 300 with aux_size 200, at most 200 members are scored however large eval_size is:
    the plan line says so, and results.json keeps the K asked for beside the K scored."""
    with caplog.at_level("INFO"):
        res = json.loads(run(make_cfg("data.split.eval_size=100000")).read_text())
    assert res["data"]["eval_size"] == {"asked": 100000, "scored": 200}
    assert res["data"]["member_eval"] == res["data"]["nonmember_eval"] == 200
    (plan,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plan: ")]
    assert "K=200" in plan and "data.split.eval_size=100000 capped by N" in plan
