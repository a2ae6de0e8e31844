from pathlib import Path

import pytest
from hydra.utils import get_object, instantiate

from mia.attacks.base import Attack
from mia.attacks.shadows import check_shadow_settings
from mia.job import JobSpec
from mia.model import build_model
from mia.validate import ConfigError
from tests.helpers.config import compose_config


def test_default_config_composes(make_cfg):
    cfg = make_cfg(small=False)
    assert cfg.data._target_ == "mia.data.corpus.Synthetic" and cfg.data.size == "1k"
    assert cfg.model.name == "tiny" and cfg.train.precision == "auto"
    assert cfg.logger._target_ == "mia.tracking.NoTracking"
    assert set(cfg.attack) == {"csa"}
    assert isinstance(instantiate(cfg.attack.csa), Attack)


@pytest.mark.parametrize(
    "group",
    [
        "model=vit_b32",
        "model=vit_b16",
        "model=rn50",
        "data=webdataset",
        "logger=wandb",
        "logger=none",
    ],
)
def test_groups_compose(make_cfg, group):
    cfg = make_cfg(group, small=False)
    key, value = group.split("=")
    assert cfg[key] is not None


def test_named_architectures_build_without_download(make_cfg):
    # ViT-B-32 builds from open_clip's config with random weights: nothing is fetched.
    model, tokenizer, preprocess = build_model(make_cfg("model=vit_b32").model)
    assert model.visual.image_size == (224, 224)
    assert tokenizer(["a photo"]).shape == (1, 77)


def test_tiny_model_embeds(make_cfg):
    import torch

    model, tokenizer, preprocess = build_model(make_cfg().model)
    with torch.no_grad():
        img = model.encode_image(torch.zeros(2, 3, 32, 32), normalize=True)
        txt = model.encode_text(tokenizer(["a red circle", "a blue square"]), normalize=True)
    assert img.shape == txt.shape == (2, 64)
    assert torch.allclose(img.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.epochs=0", "train.epochs"),
        ("train.lr=-1", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.weight_decay=-0.1", "train.weight_decay"),
        ("train.warmup_steps=-1", "train.warmup_steps"),
        ("train.num_workers=-2", "train.num_workers"),
        ("trainer.devices=0", "trainer.devices"),
        ("seed=-1", "seed"),
    ],
)
def test_bad_training_values_are_refused_up_front_naming_the_key(make_cfg, tmp_path, override, key):
    """Refused by the TrainSpec before any corpus is generated or model trained."""
    from mia.pipeline import run

    with pytest.raises(ValueError, match=rf"^{key}="):
        run(make_cfg(override))
    assert not (tmp_path / ".cache").exists()


def test_bad_attack_settings_name_the_instance_key(make_cfg, tmp_path):
    from mia.pipeline import run

    with pytest.raises(ValueError, match=r"^attack\.wsa_gomez\.gomez="):
        run(make_cfg("attack=wsa_gomez", "+attack.wsa_gomez.gomez.max_epochs=3"))
    with pytest.raises(ValueError, match=r"^attack\.rmia\.num_shadows=3"):
        run(make_cfg("attack=rmia", "attack.rmia.num_shadows=3"))
    assert not (tmp_path / ".cache").exists()


def test_experiment_needs_no_plus(make_cfg):
    from tests.helpers.config import compose_study

    cfg = compose_study("epoch_scaling")
    assert cfg.data.size == "4k" and cfg.hydra.sweeper.params["train.epochs"] == "10,20,40"


def test_gap_scaling_sweeps_five_log_spaced_sizes_within_the_member_pool():
    """The default study's design (issue: >= 5 log-spaced sizes, >= 2 seeds, T held fixed); every
    size must train on shard members only and score its K evaluation members from its own training
    set."""
    import numpy as np

    from mia.sizes import parse_size
    from tests.helpers.config import compose_study

    cfg = compose_study("gap_scaling")
    params = cfg.hydra.sweeper.params
    sizes = [parse_size(s) for s in params["data.size"].split(",")]
    seeds = params["seed"].split(",")
    assert len(sizes) >= 5 and len(set(seeds)) >= 2 and "train.epochs" not in params
    ratios = np.diff(np.log(sizes))
    assert (ratios > 0).all() and ratios.max() / ratios.min() < 1.1  # log-spaced to within 10%
    pool = parse_size(cfg.data.corpus.size) - cfg.data.split.holdout
    assert sizes[-1] <= pool and sizes[0] >= cfg.data.split.eval_size


@pytest.mark.parametrize("name", ["tn_grid", "tn_grid_cosine"])
def test_tn_grid_varies_t_and_n_alone_with_cells_of_equal_steps(name):
    """experiment=tn_grid (wsd) and tn_grid_cosine (the measured grid): >= 2 values of T and of N,
    >= 2 seeds, CSA only, the learning rate and warm-up not swept, every size within the member
    pool, and cells of equal T*N for the epochs-or-steps ratio."""
    from mia.sizes import parse_size
    from tests.helpers.config import compose_study

    cfg = compose_study(name)
    params = cfg.hydra.sweeper.params
    epochs = [int(t) for t in params["train.epochs"].split(",")]
    sizes = [parse_size(s) for s in params["data.size"].split(",")]
    assert len(epochs) >= 2 and len(sizes) >= 2 and len(params["seed"].split(",")) >= 2
    assert set(cfg.attack) == {"csa"} and not {
        "train.lr",
        "train.warmup_steps",
        "train.batch_size",
    } & set(params)
    assert max(sizes) <= parse_size(cfg.data.corpus.size) - parse_size(cfg.data.split.holdout)
    # K = min(eval_size, N - aux_size/2): the largest size scores the whole eval_size
    # (docs/design.md §2.3)
    eval_size = parse_size(cfg.data.split.eval_size)
    assert eval_size <= max(sizes) - parse_size(cfg.data.split.aux_size) // 2
    steps = [t * n for t in epochs for n in sizes]
    assert len(steps) - len(set(steps)) >= 2


def test_tn_grid_cosine_is_the_measured_grid():
    """experiment=tn_grid_cosine keeps the grid experiments/tn_grid.md's figures come from."""
    from tests.helpers.config import compose_study

    cfg = compose_study("tn_grid_cosine")
    assert {k: str(v) for k, v in cfg.hydra.sweeper.params.items()} == {
        "train.epochs": "10,20,40,80",
        "data.size": "1k,4k,16k",
        "seed": "0,1",
    }
    assert cfg.train.schedule == "cosine" and cfg.data.corpus.size == "24k"
    assert cfg.data.split.eval_size == "5k" and cfg.data.split.holdout == 4000


def _parts(name) -> list[tuple[list[str], int]]:
    """The part commands a study's header comment gives, each with the training samples it states:
    `#   python run.py experiment=<name> <overrides>   # <jobs> jobs, ... = <samples> samples`."""
    import re

    from tests.helpers.config import CONF

    text = (Path(CONF) / "experiment" / f"{name}.yaml").read_text()
    found = re.findall(
        rf"^#\s+python run\.py experiment={name} (.+?)\s+# \d+ jobs, .*= ([\d,]+) samples$",
        text,
        re.M,
    )
    return [(args.split(), int(samples.replace(",", ""))) for args, samples in found]


@pytest.mark.parametrize("name", ["tn_grid", "tn_grid_ablation", "tn_grid_glyph"])
def test_tn_grid_wsd_parts_cover_the_sweep_at_the_stated_cost(name):
    """The wsd grids: every swept T branches off one stable phase per (N, seed)
    (train.branch_epochs names them all), so their targets cost (the last stable epoch + the
    cooldowns) x N whatever order they run in; the parts the header gives, with seed=1 and 2 as
    seed=0, cover the sweep once, each states that cost, and each trains within 75 min at 1,000
    samples/s."""
    from hydra import compose, initialize_config_dir

    from mia.job import JobSpec
    from mia.sizes import parse_size
    from tests.helpers.config import CONF, compose_config, compose_study

    cfg = compose_study(name)
    epochs = [int(t) for t in _sweep(cfg, "train.epochs")]
    sizes, seeds = _sweep(cfg, "data.size"), _sweep(cfg, "seed")
    assert cfg.train.schedule == "wsd" and set(epochs) <= set(cfg.train.branch_epochs)
    assert seeds == ["0", "1", "2"] and epochs == [10, 20, 40, 80] and list(cfg.attack) == ["csa"]
    train = JobSpec.parse(compose_config(f"experiment={name}")).train
    per_n = max(t - train.cooldown_epochs(t) for t in epochs) + sum(
        train.cooldown_epochs(t) for t in epochs
    )
    assert per_n == 94
    parts = _parts(name)
    assert parts
    covered = []
    for args, samples in parts:
        over = dict(a.split("=", 1) for a in args)
        assert over.pop("seed") == "0" and set(over) <= {"data.size"}
        part_sizes = over.get("data.size", ",".join(sizes)).split(",")
        covered += part_sizes
        assert samples == per_n * sum(parse_size(n) for n in part_sizes)
        assert samples <= 75 * 60 * 1000
        for n in part_sizes:  # each job of the part composes and its spec is checked
            with initialize_config_dir(config_dir=CONF, version_base="1.3"):
                job = compose(
                    "config", overrides=[f"experiment={name}", "seed=0", f"data.size={n}"]
                )
            assert JobSpec.parse(job).n == parse_size(n)
    assert sorted(covered, key=parse_size) == sorted(sizes, key=parse_size)


def test_plus_experiment_selects_the_study_as_experiment_does():
    """`python run.py +experiment=gap_scaling` (Hydra's usual spelling) is the same study as
    experiment=."""
    import subprocess
    import sys

    from tests.helpers.config import CONF

    root = Path(CONF).parent
    out = [
        subprocess.run(
            [sys.executable, str(root / "run.py"), spelling, "--cfg", "job"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for spelling in ("+experiment=gap_scaling", "experiment=gap_scaling")
    ]
    assert out[0] == out[1] and "epochs: 28" in out[0]


STUDIES = sorted(
    p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml")
)


@pytest.mark.parametrize("name", STUDIES)
def test_every_study_builds_its_job_spec(name):
    """Each experiment composes and its first job's spec is built and checked (mia/job.py), no
    corpus read."""
    assert JobSpec.parse(compose_config(f"experiment={name}")).attacks


def _sweep(cfg, key) -> list[str]:
    """The values a study's sweeper gives `key`, as Hydra splits them ([] where it does not sweep
    it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = cfg.hydra.sweeper.params
    if key not in params:
        return []
    return list(
        OverridesParser.create()
        .parse_overrides([f"{key}={params[key]}"])[0]
        .sweep_string_iterator()
    )


def _target_settings(cfg) -> dict:
    """What a target's cache key holds from the config (mia/training/spec.py: target_key): the
    corpus, the split's seed, holdout and rules, the model and the training recipe."""
    from omegaconf import OmegaConf

    split = cfg.data.split
    return OmegaConf.to_container(
        OmegaConf.create(
            {
                "corpus": cfg.data.corpus,
                "seed": split.seed,
                "holdout": split.holdout,
                "dedup": split.dedup,
                "model": cfg.model,
                "train": cfg.train,
            }
        ),
        resolve=True,
    )


@pytest.mark.parametrize("name", ["ko_regime_search", "ko_regime"])
def test_ko_regime_studies_attack_attack_comparisons_16k_target_with_room_for_their_sets(name):
    from mia.sizes import parse_size
    from tests.helpers.config import compose_study

    # attack_comparison's 16k part (conf/attack_comparison/shadows16.yaml)
    cfg = compose_study(name)
    reference = compose_study("attack_comparison", "attack_comparison=shadows16")
    assert (
        _target_settings(cfg) == _target_settings(reference)
        and cfg.seed == 0
        and not _sweep(cfg, "seed")
    )
    assert cfg.data.size == reference.data.size
    split = cfg.data.split
    need = (
        sum(parse_size(split[k]) for k in ("eval_size", "known_size"))
        + parse_size(split.aux_size) // 2
    )
    assert need + parse_size(split.validation, "v", minimum=0) <= parse_size(
        split.holdout
    )  # before de-duplication


def test_ko_regime_search_chooses_the_shift_on_validation_pairs_with_ko_regimes_attacker():
    """The search scores validation pairs only, with the evaluation job's D_no and D_all (the same
    split but for the validation pairs), at several shifts of at least one parts list holding the
    caption, which the blind baseline reads."""
    from tests.helpers.config import compose_study

    cfg, final = compose_study("ko_regime_search"), compose_study("ko_regime")
    assert cfg.data.split.scored == "validation" and cfg.data.split.validation > 0
    assert {k: v for k, v in cfg.data.split.items() if k not in ("validation", "scored")} == {
        k: v for k, v in final.data.split.items() if k not in ("validation", "scored")
    }
    assert list(cfg.attack) == ["blind", "csa", "wsa"]
    shifts = [float(s) for s in _sweep(cfg, "data.shift")]
    assert len(shifts) >= 3 and all(0 < s < 1 for s in shifts)
    assert any("caption" in parts for parts in _sweep(cfg, "data.shift_parts"))


def test_ko_regime_runs_every_attack_and_wsas_knobs_with_and_without_shift():
    from mia.report.comparison import base_of
    from tests.helpers.config import compose_config, compose_study

    cfg = compose_study("ko_regime")
    shifts = sorted(float(s) for s in _sweep(cfg, "data.shift"))
    assert len(shifts) == 2 and shifts[0] == 0 < shifts[1]
    every = set(compose_config("attack=all").attack)
    attacks = JobSpec.parse(compose_config("experiment=ko_regime")).attacks
    assert every <= set(attacks)
    variants = {n: a for n, a in attacks.items() if n.startswith("wsa_") and n not in every}
    assert all(
        base_of(n, attacks) for n in variants
    )  # the report sets each against its base on the same pairs
    knobs = {
        (a.known_size, a.lam)
        for a in [attacks["wsa"], *variants.values()]
        if a.features == ["image", "text"]
    }
    assert knobs == {(k, lam) for k in (None, "1k") for lam in (-0.5, 0.5, 1.5)}
    assert (
        cfg.data.split.known_size == "10k"
    )  # known_size null: all 10k of D_no, against its first 1k
    assert [a.features for a in variants.values()].count(list(cfg.attack.clmia.features)) == 1
    lean = compose_config("experiment=ko_regime", "attack=no_shadows")
    assert not {"lira", "rmia"} & set(lean.attack) and set(variants) <= set(lean.attack)


def test_glyph_gap_sweeps_four_sizes_and_two_seeds_at_one_t_within_two_hours():
    """experiment=glyph_gap: the glyph corpus, CSA only, >= 4 sizes in the member pool, >= 2 seeds,
    T held fixed, and its training samples within 2 h at 1,200 samples/s (its comment's
    estimate)."""
    from mia.sizes import parse_size
    from tests.helpers.config import compose_study

    cfg = compose_study("glyph_gap")
    sizes, seeds = [parse_size(s) for s in _sweep(cfg, "data.size")], _sweep(cfg, "seed")
    assert cfg.data._target_ == "mia.data.corpus.Glyphs" and list(cfg.attack) == ["csa"]
    assert len(set(sizes)) >= 4 and len(set(seeds)) >= 2 and not _sweep(cfg, "train.epochs")
    split = cfg.data.split
    assert max(sizes) <= parse_size(cfg.data.corpus.size) - split.holdout
    assert parse_size(split.eval_size) + split.known_size + split.aux_size // 2 <= split.holdout
    assert cfg.train.epochs * sum(sizes) * len(seeds) <= 120 * 60 * 1200


# The groups whose options build an object: each option names its parser by `_target_`
BUILT = ("data", "target", "defense", "logger", "trainer", "model", "train", "shadows", "analysis")


@pytest.mark.parametrize("group", BUILT + ("attack",))
def test_every_option_of_a_built_group_names_its_target(group):
    for path in sorted((Path(__file__).resolve().parents[1] / "conf" / group).glob("*.yaml")):
        node = compose_config(f"{group}={path.stem}")[group]
        # the attack group holds one config per attack
        for n in node.values() if group == "attack" else [node]:
            assert "_target_" in n, f"{group}={path.stem} names no _target_"
            assert callable(get_object(n["_target_"])), f"{group}={path.stem}"


@pytest.mark.parametrize("group", ["model", "train", "analysis"])
def test_a_group_written_without_its_target_is_refused_naming_it(group):
    cfg = compose_config("logger=none", f"~{group}._target_")
    with pytest.raises(ConfigError, match=rf"^{group}=.*names no _target_"):
        JobSpec.parse(cfg)


def test_shadows_written_without_their_target_still_parse():
    """An attack config whose shadows node has no `_target_` (one of results.json's, say) gets the
    same settings as one built by it."""
    cfg = compose_config("attack=lira", "logger=none")
    built = instantiate(cfg.attack.lira, _convert_="all").shadows
    plain = {k: v for k, v in cfg.shadows.items() if k != "_target_"}
    assert check_shadow_settings(4, "fisher", plain) == built
