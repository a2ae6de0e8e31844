"""The real config tree, composed with test-size overrides."""

from pathlib import Path

from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parents[2] / "conf")

# A corpus and splits small enough that a full job takes seconds on a CPU (conf/debug/small.yaml).
SMALL = ["debug=small"]

# The attacks' trained fixture (tests/attacks/conftest.py): 200 members, 30 epochs, so they are
# memorised.
MODEL_OVERRIDES = [
    "data.size=200",
    "data.corpus.size=1200",
    "data.corpus.shard_size=400",
    "data.split.holdout=600",
    "data.split.eval_size=100",
    "data.split.known_size=150",
    "data.split.aux_size=200",
    "train.epochs=30",
    "train.progress_bar=false",
    "n_bootstrap=100",
    "logger=none",
]


def compose_config(*overrides):
    """conf/config.yaml with these overrides, as `python run.py <overrides>` would see it."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def compose_study(name, *overrides):
    """conf/config.yaml with experiment=<name> and these overrides, Hydra's own config (the sweep's
    params) included."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(
            "config", overrides=[f"experiment={name}", *overrides], return_hydra_config=True
        )
