"""A single job's report.md (mia/report/job.py): written by the default job beside results.json, its
headline table read from the record, every plot it links present; a report that fails to be
written costs the job nothing else."""

import copy
import json
import re
import shutil

import pytest

from mia.pipeline import run
from mia.report import job as job_report
from mia.training import history

pytestmark = pytest.mark.slow


def test_the_default_job_writes_its_report_beside_results_json(default_job):
    _, path = default_job
    record = json.loads(path.read_text())
    text = (path.parent / job_report.FILENAME).read_text()
    csa = record["attacks"]["csa"]
    assert text.startswith("# Job report: N=300, T=2, iid non-members")
    row = next(line for line in text.splitlines() if line.startswith("| csa (reference) |"))
    lo, hi = csa["auc_ci95"]
    assert f"| {csa['auc']:.3f} [{lo:.3f}, {hi:.3f}] |" in row
    # 100 non-members allow one false positive at 1% FPR: the TPR there is not resolved
    assert not csa["low_fpr_resolved"]["1e-2"] and f"{csa['tpr_at_fpr_1e-2']:.3f}" in row
    assert row.count("(unresolved)") == 2
    for section in ("## ROC (log-log)", "## Member and non-member scores", "## Utility"):
        assert section in text
    assert "K=100 members and 100 non-members" in text and "- attacks: csa" in text
    assert f"cache key {record['target']['cache_key']}, trained by this job" in text
    linked = re.findall(r"\]\(([^)]+)\)", text)
    assert set(linked) == {
        "roc_loglog.png",
        "scores_csa.png",
        "training_loss.png",
        "training_history.csv",
    }
    assert all((path.parent / name).is_file() for name in linked)


def test_an_attack_compared_with_the_reference_gets_its_verdict(default_job, tmp_path):
    record = json.loads(default_job[1].read_text())
    other = copy.deepcopy(record["attacks"]["csa"])
    other.update(
        auc=0.4,
        low_fpr_resolved={"1e-2": True, "1e-3": False},
        tpr_tied={"1e-2": True, "1e-3": False},
        vs_csa={"delta_auc": -0.113, "delta_auc_ci95": [-0.2, -0.05], "delong_p_value": 0.004},
    )
    record["attacks"]["other"] = other
    record["skipped"] = {"wsa": "lam=100: no pair reaches it"}
    text = job_report.markdown(record, tmp_path)
    names = [line.split(" | ")[0] for line in text.splitlines() if line.startswith("| ")]
    assert names[1:3] == ["| csa (reference)", "| other"]  # the reference first
    row = next(line for line in text.splitlines() if line.startswith("| other |"))
    assert "-0.113 [-0.200, -0.050] (below CSA)" in row and "0.004 (0.004)" in row
    assert row.count("(unresolved)") == 1  # at 0.1% FPR only
    assert row.count("(tied)") == 1 and "(tied)" in row.split(" | ")[2]  # at 1% FPR only
    assert "## Not scored\n\n- wsa: lam=100: no pair reaches it" in text
    assert "- attacks: csa, other, wsa" in text
    assert "![" not in text  # no plot in tmp_path, none linked
    # a second comparison makes a family of two: Holm doubles the smaller p, and a verdict at
    # p 0.03 alone no longer stands
    record["attacks"]["other"]["vs_csa"]["delong_p_value"] = 0.03
    record["attacks"]["third"] = copy.deepcopy(record["attacks"]["other"])
    text = job_report.markdown(record, tmp_path)
    row = next(line for line in text.splitlines() if line.startswith("| other |"))
    assert "(no verdict)" in row and "0.03 (0.06)" in row


def test_a_cache_hit_keeps_the_trained_runs_history_and_a_failed_report_costs_nothing_else(
    make_cfg, small_target, default_job, monkeypatch
):
    def fail(record, job_dir):
        raise ValueError("drawing failed")

    monkeypatch.setattr(job_report, "markdown", fail)
    path = run(make_cfg())
    record = json.loads(path.read_text())
    assert record["target"]["cache_hit"] and record["attacks"]["csa"]
    assert not (path.parent / job_report.FILENAME).exists()
    trained = default_job[1].parent / history.IN_RUN[history.FILE]
    kept = path.parent / history.IN_RUN[history.FILE]
    assert kept.read_bytes() == trained.read_bytes()
    assert (path.parent / history.IN_RUN[history.PLOT]).is_file()


def test_report_md_can_be_written_again_from_results_json(default_job, tmp_path):
    _, path = default_job
    folder = shutil.copytree(path.parent, tmp_path / "job")
    (folder / job_report.FILENAME).unlink()
    job_report.write(folder, json.loads((folder / "results.json").read_text()))
    assert (folder / job_report.FILENAME).read_text() == (
        path.parent / job_report.FILENAME
    ).read_text()
