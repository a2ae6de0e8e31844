import os
from pathlib import Path

import pytest
import torch

from tests.helpers.caches import seed_cache
from tests.helpers.config import SMALL, compose_config
from tests.helpers.shared import built_once

os.environ.setdefault("WANDB_SILENT", "true")

# Under pytest-xdist (make test runs one worker per core) each worker gets its share of the cores,
# and so do the jobs it starts as subprocesses: intra-op threads beyond that only contend.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real config tree with test-size overrides and paths under tmp_path."""

    def _make(*overrides, small=True):
        logger = [] if any(o.startswith("logger=") for o in overrides) else ["logger=none"]
        return compose_config(
            *(SMALL if small else []), f"paths.root_dir={tmp_path}", *logger, *overrides
        )

    return _make


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory) -> Path:
    """A cache holding the debug=small corpus and its index, generated once a session: every
    test-size job reads this corpus. Tests get copies (`small_corpus`, seed_cache), never this
    folder itself."""
    from mia.validate import build

    with built_once(tmp_path_factory, "small_cache") as (root, fresh):
        cfg = compose_config(*SMALL, f"paths.root_dir={root}", "logger=none")
        if fresh:
            build(cfg.data, "data").member_corpus(Path(cfg.paths.cache_dir))
    return Path(cfg.paths.cache_dir)


@pytest.fixture
def small_corpus(tmp_path, small_cache) -> Path:
    """make_cfg's cache (tmp_path/.cache) holding the debug=small corpus and index, as an earlier
    job leaves them: for tests of what a job does with a corpus, not of how it is generated."""
    return seed_cache(small_cache, tmp_path / ".cache")


@pytest.fixture(scope="session")
def default_job(tmp_path_factory, small_cache):
    """(config, results.json path) of the default job (attack=csa) at test size, logged to W&B
    offline. One run serves tests/test_pipeline.py, tests/evaluation/ and tests/report/; tests that
    change its files copy it. It trains its target (cache_hit false) on small_cache's corpus."""
    from mia.pipeline import run

    with built_once(tmp_path_factory, "default_job") as (root, fresh):
        cfg = compose_config(*SMALL, f"paths.root_dir={root}", "logger=wandb")
        if fresh:
            seed_cache(small_cache, cfg.paths.cache_dir)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("WANDB_MODE", "offline")
                (root / "results_path").write_text(str(run(cfg)))
    return cfg, Path((root / "results_path").read_text())


@pytest.fixture
def small_target(tmp_path, default_job) -> Path:
    """make_cfg's cache holding the default job's: the debug=small corpus, its index, the default
    target (data.size=300, 2 epochs) and its features, so that `run(make_cfg())` trains nothing.
    For tests of what comes after training, or of a target other than the default one."""
    return seed_cache(default_job[0].paths.cache_dir, tmp_path / ".cache")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests skip cleanly where there is no CUDA device (CI never has one); `slurm` tests
    (root, Debian packages, daemons) skip unless asked for."""
    skips = {}
    if not torch.cuda.is_available():
        skips["gpu"] = pytest.mark.skip(reason="needs a CUDA device")
    if os.environ.get("MIA_TEST_SLURM") != "1":
        skips["slurm"] = pytest.mark.skip(
            reason="starts a SLURM cluster as root and may apt-get install slurm-wlm "
            "and munge: ask with MIA_TEST_SLURM=1 or `make test-slurm`"
        )
    for item in items:
        for marker, skip in skips.items():
            if marker in item.keywords:
                item.add_marker(skip)
