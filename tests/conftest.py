import os

import pytest

from tests.helpers.config import SMALL, compose_config

os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real config tree with test-size overrides and paths under tmp_path."""
    def _make(*overrides, small=True):
        logger = [] if any(o.startswith("logger=") for o in overrides) else ["logger=none"]
        return compose_config(*(SMALL if small else []), f"paths.root_dir={tmp_path}", *logger, *overrides)
    return _make


@pytest.fixture(scope="session")
def default_job(tmp_path_factory):
    """(config, results.json path) of the default job (attack=csa) at test size, logged to W&B offline.
    One run serves tests/test_pipeline.py, tests/evaluation/ and tests/report/; tests that change its files copy it."""
    from mia.pipeline import run

    cfg = compose_config(*SMALL, f"paths.root_dir={tmp_path_factory.mktemp('default_job')}", "logger=wandb")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        return cfg, run(cfg)


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly where there is no CUDA device (CI never has one); `slurm` tests (root,
    Debian packages, daemons) skip unless asked for."""
    import torch

    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA device")
    if os.environ.get("MIA_TEST_SLURM") != "1":
        skips["slurm"] = pytest.mark.skip(reason="starts a SLURM cluster as root and may apt-get install slurm-wlm "
                                                 "and munge: ask with MIA_TEST_SLURM=1 or `make test-slurm`")
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)
