"""results.json (mia/evaluation/results.py, docs/design.md §10): a record built as mia/pipeline.py
builds it holds every key its readers read, carries the current schema version, and keeps the
attacks' diagnostics out of the report's rows and the W&B summary."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from mia import tracking
from mia.evaluation import metrics, results, scores, utility
from mia.evaluation.dataset_inference import check_settings, dataset_inference
from mia.report import build_report
from mia.report.checks import check_scores
from mia.report.rows import load_rows
from mia.validate import build
from tests.helpers.config import SMALL, compose_config

ATTACKS, COPIES = ("csa", "blind"), ("copies=1", "copies=4")

# Every key of results.json that a reader reads: the sweep report (mia/report/: rows.py, stats.py,
# checks.py, privacy_utility.py, canaries.py, inference.py, build.py) and the W&B summary
# (tracking.summary). <attack> stands for each attack of the job, <copies> for each canary copy
# count.
READ = [
    "config.n_bootstrap",
    "config.data.split.seed",  # report.stats.bootstrap_settings
    "config.train.weight_decay",  # report.rows.report_row: privacy_utility's arms
    "config.logger",  # tracking.start, for the report's W&B run
    "config.analysis.dataset_inference.enabled",  # report.inference._settings
    "seed",
    "scores",  # report.rows.report_row, results.scores_path
    "target.size",
    "target.epochs",
    "target.model",
    "target.params",
    "target.cache_key",  # report.rows.report_row
    "target.cache_hit",  # tracking.summary
    "data.nonmembers",
    "data.shift",
    "data.shift_parts",  # report.rows.report_row
    "gap.value",
    "gap.ci95",
    "gap.member_mean",
    "gap.nonmember_mean",  # report_row, report.checks
    "gap.gaussian_auc",  # report.stats.points
    "attacks.<attack>.auc",
    "attacks.<attack>.auc_std",
    "attacks.<attack>.tpr_at_fpr_1e-2",
    "attacks.<attack>.tpr_at_fpr_1e-3",
    "attacks.<attack>.oracle_balanced_accuracy",  # report.rows.REPORTED, checks
    "attacks.<attack>.low_fpr_resolved.1e-2",
    "attacks.<attack>.low_fpr_resolved.1e-3",  # report.rows.report_row
    "attacks.blind.vs_csa.delta_auc",
    "attacks.blind.vs_csa.delta_auc_ci95",  # report.rows.report_row, checks
    "attacks.blind.vs_csa.delta_tpr_at_fpr_1e-2",
    "attacks.blind.vs_csa.p_value",
    "attacks.blind.vs_csa.delong_p_value",
    "attacks.<attack>.n_members",
    "attacks.<attack>.n_nonmembers",  # report.checks.RECOMPUTED_EXACT
    "roc.<attack>.fpr",
    "roc.<attack>.tpr",  # report.figures.plot_rocs, tracking.log_results
    "defense.label",  # report.rows.report_row
    "defense.privacy.epsilon",
    "defense.privacy.delta",  # results.privacy_summary
    "utility.retrieval.pool_size",
    "utility.retrieval.i2t_r1",
    "utility.retrieval.t2i_r1",
    "utility.retrieval.chance_r1",  # privacy_utility.table / plot, via utility.summary
    "utility.attributes.colour_acc",
    "utility.attributes.colour_chance",
    "utility.attributes.shape_acc",
    "utility.attributes.shape_chance",  # privacy_utility.table
    "canaries.count",
    "canaries.attacks.<attack>.<copies>.auc",  # report.canaries.canary_rows
    "canaries.attacks.<attack>.<copies>.auc_ci95",
    "canaries.attacks.<attack>.<copies>.tpr_at_fpr_1e-2",
]


def expanded(keys):
    return [
        k.replace("<attack>", a).replace("<copies>", c)
        for k in keys
        for a in (ATTACKS if "<attack>" in k else [""])
        for c in (COPIES if "<copies>" in k else [""])
    ]


def lookup(record, key):
    """record["a"]["b"]... for key "a.b...", failing with the first missing part."""
    node = record
    for part in key.split("."):
        assert isinstance(node, dict) and part in node, f"{key}: no {part!r} in results.json"
        node = node[part]
    return node


def scored(rng, n=40):
    """(member, non-member) scores of a weakly separating attack."""
    return rng.normal(0.5, 1, n), rng.normal(0, 1, n)


def evaluated(member, nonmember):
    """(metrics, ROC table) of one attack's scores, as mia.pipeline._attack computes them."""
    both, labels = np.r_[member, nonmember], np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    return metrics.roc_metrics(both, labels, n_bootstrap=20), metrics.roc_table(both, labels)


def write_job(job_dir):
    """A job's results.json and scores.parquet, built as mia/pipeline.py builds them, from fake
    scores."""
    job_dir.mkdir(parents=True, exist_ok=True)
    cfg = compose_config(*SMALL, "defense=dp_sgd", "logger=none", f"paths.root_dir={job_dir}")
    rng = np.random.default_rng(0)
    cos = scored(rng)
    gap = metrics.gap(*cos, n_bootstrap=20)
    gap["gaussian_auc"] = metrics.gaussian_auc(
        gap["value"], gap["member_std"], gap["nonmember_std"]
    )
    record = results.new(  # target and data as mia.pipeline._record fills them
        config=OmegaConf.to_container(cfg, resolve=True),
        git="0123abc",
        seed=cfg.seed,
        target={
            "source": "train",
            "size": 300,
            "epochs": 2,
            "model": cfg.model.name,
            "params": 12345,
            "world_size": 1,
            "cache_key": "key",
            "cache_hit": False,
            "checkpoint": "model.pt",
            "trained_uids": "trained_uids.txt",
            "open_clip": "open_clip",
        },
        data={
            "nonmembers": "iid",
            "shift": 0.0,
            "shift_parts": None,
            "corpus": "synthetic-iid",
            "nonmember_corpus": "synthetic-iid",
            "member_eval": 40,
            "nonmember_eval": 40,
        },
        gap=gap,
    )
    target_dir = (
        job_dir / "target"
    )  # the target's cache folder, where dp_sgd's accountant leaves its figures
    target_dir.mkdir()
    (target_dir / "privacy.json").write_text(
        json.dumps({"epsilon": 8.0, "delta": 1e-5, "steps": 10})
    )
    record["defense"] = build(cfg.defense, "defense").record(target_dir)
    image, text = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    classes = {
        "colour": rng.normal(size=(len(utility.COLOURS), 8)),
        "shape": rng.normal(size=(len(utility.SHAPES), 8)),
    }
    labels = [
        (utility.COLOURS[i % len(utility.COLOURS)], utility.SHAPES[i % len(utility.SHAPES)])
        for i in range(40)
    ]
    record["utility"] = {
        "retrieval": utility.recall_at_k(image, text),  # as utility.measure assembles them
        "attributes": utility.attribute_accuracy(image, labels, classes),
    }
    attack_scores = {name: scored(rng) for name in ATTACKS}
    attack_scores["csa"] = cos  # the reference's scores, as a job's: the cosines
    for name, pair in attack_scores.items():
        m, table = evaluated(*pair)
        vs_csa = None if name == "csa" else metrics.paired_comparison(pair, cos, n_bootstrap=20)
        results.add_attack(
            record,
            name,
            m,
            0.1,
            {"a_diagnostic": 1},
            {"fpr": [r["fpr"] for r in table], "tpr": [r["tpr"] for r in table]},
            vs_csa=vs_csa,
            calibrated=metrics.calibrated_thresholds(rng.normal(0, 1, 200), *pair),
            reference="csa",
        )
    record["timing"] = {"train_s": 1.0, "features_s": 1.0, "attacks_s": 0.2, "utility_s": 0.1}
    record["canaries"] = {
        "count": 10,
        "copies": [1, 4],
        "skipped": {},
        "seconds": {a: 0.1 for a in ATTACKS},
        "attacks": {a: {c: evaluated(*scored(rng, 10))[0] for c in COPIES} for a in ATTACKS},
    }
    settings = check_settings({**cfg.analysis.dataset_inference, "draws": 50})
    results.add_analysis(
        record,
        "dataset_inference",
        {a: dataset_inference(*pair, settings, seed=cfg.seed) for a, pair in attack_scores.items()},
    )
    sets = {
        "member_eval": SimpleNamespace(uids=[f"m{i}" for i in range(40)], cos=cos[0]),
        "nonmember_eval": SimpleNamespace(uids=[f"n{i}" for i in range(40)], cos=cos[1]),
    }
    table = scores.frame(sets, {s: ["a caption"] * 40 for s in sets}, attack_scores)
    results.add_scores(record, scores.write(job_dir / scores.FILENAME, table).name)
    return results.write(job_dir / "results.json", record)


def test_every_key_a_reader_reads_is_written(tmp_path):
    write_job(tmp_path / "job")
    rows = load_rows(tmp_path)  # the report's loader
    for key in expanded(READ):
        lookup(rows[0]["_results"], key)
    checks = check_scores(rows)  # and the values agree with the per-pair scores they came from
    assert checks["agree"] and checks["checked"] == ["job"], checks
    build_report(tmp_path, wandb_log=False)  # every section of the report reads them
    assert "## Privacy and utility" in (tmp_path / "report.md").read_text()


def test_the_schema_version_written_is_the_current_one(tmp_path):
    path = write_job(tmp_path)
    assert json.loads(path.read_text())["schema_version"] == results.SCHEMA_VERSION == 3


def test_other_schema_versions_are_refused(tmp_path):
    path = write_job(tmp_path)
    record = json.loads(path.read_text())
    for version in (2, 4):
        record["schema_version"] = version
        results.write(path, record)
        with pytest.raises(results.SchemaError, match=f"schema {version}"):
            results.load(path)


def test_add_attack_requires_the_comparison_and_the_calibration(tmp_path):
    m, table = evaluated(*scored(np.random.default_rng(0)))
    roc = {"fpr": [r["fpr"] for r in table], "tpr": [r["tpr"] for r in table]}
    record = results.new({}, "x", 0, {}, {}, {})
    with pytest.raises(ValueError, match="vs_csa"):  # an attack but csa without its comparison
        results.add_attack(
            record, "wsa", m, 0.1, {}, roc, calibrated_skipped="why", reference="csa"
        )
    with pytest.raises(ValueError, match="vs_csa"):  # csa compared with itself
        results.add_attack(
            record, "csa", m, 0.1, {}, roc, vs_csa={}, calibrated_skipped="why", reference="csa"
        )
    with pytest.raises(ValueError, match="calibrated"):  # neither thresholds nor a reason
        results.add_attack(record, "csa", m, 0.1, {}, roc, reference="csa")


def test_diagnostics_stay_out_of_the_rows_and_the_w_and_b_summary(tmp_path):
    write_job(tmp_path / "job")
    row = load_rows(tmp_path)[0]
    record = row["_results"]
    assert record["attacks"]["csa"]["diagnostics"] == {"a_diagnostic": 1}
    assert results.attack_metrics(record)["csa"] == {
        k: v for k, v in record["attacks"]["csa"].items() if k not in ("diagnostics", "calibrated")
    }
    assert not any("a_diagnostic" in k for k in row) and not any(
        "a_diagnostic" in k for k in tracking.summary(record)
    )


def test_add_attack_takes_exactly_the_unshifted_metrics(tmp_path):
    """Under data.shift: auc_unshifted, its interval, n_unshifted and (but for csa)
    vs_csa_unshifted, beside the metrics and out of the shared metric keys that every job has."""
    m, table = evaluated(*scored(np.random.default_rng(0)))
    roc = {"fpr": [r["fpr"] for r in table], "tpr": [r["tpr"] for r in table]}
    kept = {"auc_unshifted": 0.6, "auc_unshifted_ci95": [0.5, 0.7], "n_unshifted": 25}
    record = results.new({}, "x", 0, {}, {}, {})
    results.add_attack(
        record, "csa", m, 0.1, {}, roc, calibrated_skipped="why", unshifted=kept, reference="csa"
    )
    results.add_attack(
        record,
        "wsa",
        m,
        0.1,
        {},
        roc,
        vs_csa={},
        calibrated_skipped="why",
        unshifted={**kept, "vs_csa_unshifted": None},
        reference="csa",
    )
    assert (
        record["attacks"]["wsa"]["n_unshifted"] == 25
        and "auc_unshifted" not in results.attack_metrics(record)["csa"]
    )
    with pytest.raises(ValueError, match="unshifted metrics"):  # csa compared with itself
        results.add_attack(
            record,
            "csa",
            m,
            0.1,
            {},
            roc,
            calibrated_skipped="why",
            unshifted={**kept, "vs_csa_unshifted": None},
            reference="csa",
        )
    # an attack but csa without its comparison
    with pytest.raises(ValueError, match="unshifted metrics"):
        results.add_attack(
            record,
            "wsa",
            m,
            0.1,
            {},
            roc,
            vs_csa={},
            calibrated_skipped="why",
            unshifted=kept,
            reference="csa",
        )


def test_an_attack_the_job_could_not_score_is_kept_apart_from_the_metrics(tmp_path):
    write_job(tmp_path / "job")
    record = load_rows(tmp_path)[0]["_results"]
    assert results.skipped(record) == {}
    results.add_skipped(record, "wsa_highlam", "lam=1.5: no pseudo-members")
    assert results.skipped(record) == {"wsa_highlam": "lam=1.5: no pseudo-members"}
    assert "wsa_highlam" not in results.attack_metrics(record)
    assert tracking.summary(record)["wsa_highlam/skipped"] == "lam=1.5: no pseudo-members"
