"""The sweep report's check of results.json against scores.parquet (mia/report/checks.py) on a real
job (the session's default job: tests/conftest.py): it agrees, and a tampered score fails the
report."""

import json
import shutil

import numpy as np
import pytest

from mia import report
from mia.evaluation import results, scores


@pytest.mark.slow
def test_report_recomputes_metrics_and_fails_on_tampering(default_job, tmp_path, capsys):
    _, path = default_job
    sweep = tmp_path / "sweep"
    shutil.copytree(path.parent, sweep / "good", ignore=shutil.ignore_patterns("wandb"))
    report.build_report(sweep, wandb_log=False)
    assert (
        "metrics recomputed from scores.parquet: 1 jobs, all agree"
        in (sweep / "report.md").read_text()
    )
    checks = json.loads((sweep / "checks.json").read_text())["scores"]
    assert checks["agree"] and checks["checked"] == ["good"]

    shutil.copytree(path.parent, sweep / "tampered", ignore=shutil.ignore_patterns("wandb"))
    df = scores.load(sweep / "tampered" / "scores.parquet")
    member = df.index[df["label"] == 1][int(np.argmin(df["csa"][df["label"] == 1]))]
    df.loc[member, "csa"] = 1.0  # the lowest-scoring member now outscores every pair: AUC moves
    scores.write(sweep / "tampered" / "scores.parquet", df)
    with pytest.raises(SystemExit) as exit_:
        report.main([str(sweep), "--no-wandb"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    reported = results.load(path)["attacks"]["csa"]["auc"]
    assert f"tampered: csa auc: results.json {reported!r}, scores.parquet " in err
    assert "good:" not in err
    checks = json.loads((sweep / "checks.json").read_text())["scores"]  # written before the exit
    assert not checks["agree"] and {
        (m["job"], m["attack"], m["metric"]) for m in checks["mismatches"]
    } >= {("tampered", "csa", "auc")}
    assert "tampered: csa auc" in (sweep / "report.md").read_text()
