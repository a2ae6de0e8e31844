"""mia.audit.audit, the Python entry point: a model held in memory gets the very scores the command
line gives the same model from disk (target=checkpoint data=audit), on the same pairs."""

import json
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch

from mia.audit import audit
from mia.data.shards import build_index
from mia.pipeline import run
from mia.validate import ConfigError
from tests.helpers.shards import write_subset

pytestmark = pytest.mark.slow

ATTACKS = ["csa", "gradnorm", "blind"]
SPLITS = ["data.split.eval_size=50", "data.split.known_size=100", "data.split.aux_size=100"]


@pytest.fixture
def folders(default_job, tmp_path):
    """(exported target folder, member folder, non-member folder) of the default job's target: the
    pairs it trained on, and 250 of the corpus's pairs it never saw."""
    res = json.loads(Path(default_job[1]).read_text())
    members = Path(res["target"]["trained_uids"]).read_text().split()
    shards = sorted(Path(default_job[0].paths.cache_dir).glob("corpus/synthetic-iid-*/*.tar"))
    unseen = np.setdiff1d(build_index(shards).uids, members)[:250]
    write_subset(shards, members, tmp_path / "members")
    write_subset(shards, unseen, tmp_path / "nonmembers")
    return Path(res["target"]["open_clip"]), tmp_path / "members", tmp_path / "nonmembers"


def test_audit_of_a_model_in_memory_scores_as_the_command_line_does(folders, make_cfg, tmp_path):
    export, members, nonmembers = folders
    on_disk = run(
        make_cfg(
            "target=checkpoint",
            f"target.path={export}",
            "data=audit",
            f"data.members={members}",
            f"data.nonmembers_path={nonmembers}",
            f"attack=[{','.join(ATTACKS)}]",
            "n_bootstrap=50",
            *SPLITS,
            small=False,
        )
    )
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{export}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{export}")
    model.train()  # given back as it came
    record = audit(
        model,
        preprocess,
        tokenizer,
        members,
        nonmembers,
        attacks=ATTACKS,
        overrides=["n_bootstrap=50", *SPLITS],
        root=tmp_path / "audit",
    )
    expected = json.loads(on_disk.read_text())
    assert model.training and next(model.parameters()).device == torch.device("cpu")
    assert record["target"]["checkpoint"] == "in memory" and record["target"]["cache_hit"]
    assert record["data"] == {**expected["data"], "features_cache_hit": False}
    assert record["gap"] == expected["gap"]
    for name in ATTACKS:
        assert record["attacks"][name]["auc"] == expected["attacks"][name]["auc"]
        assert record["roc"][name] == expected["roc"][name]
    runs = sorted((tmp_path / "audit" / "outputs" / "runs").glob("*/results.json"))
    assert [json.loads(p.read_text()) for p in runs] == [record]  # what results.json holds
    scores = pd.read_parquet(runs[0].parent / record["scores"])
    pd.testing.assert_frame_equal(scores, pd.read_parquet(on_disk.parent / expected["scores"]))


def test_audit_refuses_a_bad_setting_by_its_key(folders, tmp_path):
    export, members, nonmembers = folders
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{export}")
    with pytest.raises(ConfigError, match=r"^attack\.lira needs shadow models.*shadows\.paths="):
        audit(model, preprocess, None, members, nonmembers, ["lira"], root=tmp_path / "a")
    with pytest.raises(ConfigError, match=r"^epochs=0"):
        audit(model, preprocess, None, members, nonmembers, epochs=0, root=tmp_path / "a")
    assert not (tmp_path / "a" / "outputs").exists()
