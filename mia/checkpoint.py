"""open_clip checkpoints in and out: every trained target is exported in a form any open_clip user
loads, and a CLIP trained elsewhere is loaded through open_clip itself (docs/design.md §3.6).

Export: `<target>/open_clip/` holds `open_clip_config.json` ({"model_cfg": ...}) and
`open_clip_pytorch_model.bin` (a plain state dict), the layout open_clip's `local-dir:` schema and
the Hugging Face hub use, custom architectures such as `tiny` included:

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:<target>/open_clip")

Import accepts that folder, an open_clip training checkpoint ({"epoch", "name", "state_dict", ...},
`module.` prefixes under DDP), a plain state dict, or an open_clip pretrained tag.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import open_clip
import torch

from mia.cache import Layout, atomic, atomic_write_text, config_hash
from mia.model import model_config

log = logging.getLogger(__name__)

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_pytorch_model.bin"


def export(model, model_cfg, folder: Path) -> Path:
    """Write `model` as an open_clip `local-dir:` folder; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic(folder / WEIGHTS_FILE) as tmp:
        torch.save(model.state_dict(), tmp)
    atomic_write_text(
        folder / CONFIG_FILE, json.dumps({"model_cfg": model_config(model_cfg)}, indent=1)
    )
    return folder


def load(path, tag, model_cfg, cache_dir):
    """(model, tokenizer, preprocess, fingerprint) of the CLIP `target.path` or `target.pretrained`
    (exactly one of them) names, built by open_clip. `model_cfg` (the `model` group) gives the
    architecture of a weights file; an exported folder carries its own."""
    if tag:
        name = model_cfg["name"]
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=tag, output_dict=True
        )
        return model.eval(), open_clip.get_tokenizer(name), preprocess, f"pretrained:{name}:{tag}"
    path = Path(path)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"target.path={str(path)!r} is a folder without {CONFIG_FILE}: point it at "
                "a checkpoint file, or at a folder mia exported (<target>/open_clip)"
            )
        name = f"local-dir:{path.resolve()}"
        model, _, preprocess = open_clip.create_model_and_transforms(name, output_dict=True)
        weights = (
            sorted(path.glob("*.bin"))
            + sorted(path.glob("*.safetensors"))
            + sorted(path.glob("*.pth"))
        )
        files = [path / CONFIG_FILE, *weights]
        return model.eval(), open_clip.get_tokenizer(name), preprocess, _content_hash(files)
    if not path.is_file():
        raise FileNotFoundError(f"target.path={str(path)!r}: no such checkpoint file")
    name = _registered(model_cfg, cache_dir)
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(path), output_dict=True
    )
    return (
        model.eval(),
        open_clip.get_tokenizer(name),
        preprocess,
        _content_hash([path]) + f":{name}",
    )


def is_checkpoint(path) -> bool:
    """A checkpoint file, or a folder mia exported (it holds open_clip_config.json)."""
    path = Path(path)
    return path.is_file() or (path.is_dir() and (path / CONFIG_FILE).is_file())


def fingerprint(path) -> str:
    """A hash of a checkpoint file's bytes, or of an exported folder's config and weights: the
    same bytes anywhere give the same fingerprint."""
    path = Path(path)
    if path.is_dir():
        weights = sorted(path.glob("*.bin")) + sorted(path.glob("*.safetensors"))
        return _content_hash([path / CONFIG_FILE, *weights, *sorted(path.glob("*.pth"))])
    return _content_hash([path])


def _registered(model_cfg, cache_dir: Path) -> str:
    """The open_clip name of the `model` group; a custom `arch` is registered with open_clip first
    (open_clip names a config file's model by its stem), so that create_model_and_transforms builds
    it like any named architecture."""
    name = model_cfg["name"]
    if model_cfg.get("arch"):
        cfg = model_config(model_cfg)
        path = Layout(cache_dir).model_config(name, config_hash(cfg))
        atomic_write_text(path, json.dumps(cfg))
        open_clip.add_model_config(path)
    return name


def _content_hash(files) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
