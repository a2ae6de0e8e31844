"""The Python entry point: audit an open_clip model held in memory as `mia target=checkpoint
data=audit` audits one on disk, and get back the record that job writes to results.json.

    import open_clip
    from mia.audit import audit

    model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=...)
    record = audit(model, preprocess, open_clip.get_tokenizer("ViT-B-32"),
                   members="shards/members", nonmembers="shards/nonmembers", attacks=["csa", "wsa"])
    record["attacks"]["wsa"]["auc"]

Members and non-members are shard folders (img2dataset / webdataset layout, as data.members and
data.nonmembers_path take them), optionally narrowed by uid lists; the evaluation sets, D_no and
D_all are drawn from them as data=audit draws them (docs/design.md §2). Every other setting is a
Hydra override of the config tree, as on the command line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from mia.job import JobSpec
from mia.pipeline import run_here
from mia.training.stage import InMemory

CONF = Path(__file__).resolve().parents[1] / "conf"


def audit(
    model,
    preprocess,
    tokenizer,
    members,
    nonmembers,
    attacks: Sequence[str] = ("csa",),
    *,
    members_uids=None,
    nonmembers_uids=None,
    size=None,
    epochs=None,
    overrides: Sequence[str] = (),
    root=None,
) -> dict:
    """The results.json record of `attacks` (names of conf/attack/ files) on `model`, an open_clip
    CLIP (encode_image, encode_text) with its `preprocess` and `tokenizer`.

    members, nonmembers: shard folders of pairs the model trained on and pairs it did not;
    members_uids, nonmembers_uids: uid lists (.txt, .parquet, .npy) that narrow them.
    size, epochs: the N and T its owner reports (the report's axes); None = unknown.
    overrides: Hydra overrides, e.g. ["data.split.eval_size=2k", "n_bootstrap=0", "logger=wandb",
    "shadows.paths=[{checkpoint: ref0.pt, uids: ref0.txt}]"] (lira and rmia need reference models:
    the model in memory has no recipe to train shadows with).
    root: paths.root_dir, where the cache and outputs/runs/<time>/ (results.json, scores.parquet,
    plots) go; None: the command line's ($MIA_ROOT, else the working directory).

    A bad setting raises mia.validate.ConfigError naming its key, before any work. The model is
    moved to the job's device and put in eval mode while it is audited, then given back as it
    was."""
    settings = [
        "data=audit",
        f"data.members={_quoted(members)}",
        f"data.nonmembers_path={_quoted(nonmembers)}",
        f"attack=[{','.join(attacks)}]",
    ]
    for key, value in (("members_uids", members_uids), ("nonmembers_uids", nonmembers_uids)):
        if value is not None:
            settings.append(f"data.{key}={_quoted(value)}")
    if root is not None:
        settings.append(f"paths.root_dir={_quoted(root)}")
    if not any(o.startswith("logger=") for o in overrides):
        settings.append("logger=none")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*settings, *overrides])
    with open_dict(cfg):  # results.json's config says where the target came from
        cfg.target = {"_target_": f"{InMemory.__module__}.InMemory", "size": size, "epochs": epochs}
    job = JobSpec.parse(cfg, target=InMemory(model, preprocess, tokenizer, size, epochs))
    device, training = next(model.parameters()).device, model.training
    try:
        path = run_here(job)
    finally:
        model.to(device).train(training)
    return json.loads(path.read_text())


def _quoted(path) -> str:
    """A path as a Hydra override value: quoted, so that spaces, commas or '=' stay part of it."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"
