import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parent.parent / "conf")
os.environ.setdefault("WANDB_SILENT", "true")

# A corpus and splits small enough that a full job takes seconds on a CPU.
SMALL = ["data.size=300", "data.corpus.size=1200", "data.corpus.shard_size=400",
         "data.split.holdout=500", "data.split.eval_size=100", "data.split.known_size=150",
         "data.split.aux_size=200", "train.epochs=2", "train.progress_bar=false", "n_bootstrap=50"]


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real config tree with test-size overrides and paths under tmp_path."""
    def _make(*overrides, small=True):
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            logger = [] if any(o.startswith("logger=") for o in overrides) else ["logger=none"]
            return compose("config", overrides=[*(SMALL if small else []), f"paths.root_dir={tmp_path}",
                                                *logger, *overrides])
    return _make


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
