"""open_clip models with no pretrained weights: a named architecture or a small custom one."""

from __future__ import annotations

import open_clip
from omegaconf import OmegaConf

from mia.validate import ConfigError


def settings(**model) -> dict:
    """The `model` group (its `_target_`): the settings as training reads them and a target's cache
    key holds them, `name` required (TrainSpec checks it), the rest (arch, width, ...) as given."""
    return model


def model_config(model_cfg) -> dict:
    """open_clip's model config (embed_dim, vision_cfg, text_cfg, ...) of the `model` group."""
    arch = model_cfg.get("arch")
    if arch:
        return (
            OmegaConf.to_container(arch, resolve=True) if OmegaConf.is_config(arch) else dict(arch)
        )
    cfg = open_clip.get_model_config(model_cfg["name"])
    if cfg is None:
        raise ConfigError(
            "model.name",
            need=f"={model_cfg['name']!r} is not an open_clip architecture "
            "(see open_clip.list_models()) and model.arch is not set",
        )
    return cfg


def build_model(model_cfg):
    """Returns (model, tokenizer, preprocess) for `model.name` (+ `model.arch` for custom configs);
    `model_cfg` is the `model` group, as a DictConfig or a plain dict."""
    if model_cfg.get("arch"):
        arch = model_config(model_cfg)
        model = open_clip.CLIP(**arch, output_dict=True)
        tokenizer = open_clip.SimpleTokenizer(context_length=arch["text_cfg"]["context_length"])
    else:
        model_config(
            model_cfg
        )  # refuses, naming model.name, an architecture open_clip does not know
        name = model_cfg["name"]
        model = open_clip.create_model(name, pretrained=None, output_dict=True)
        tokenizer = open_clip.get_tokenizer(name)
    size = model.visual.image_size
    preprocess = open_clip.image_transform(
        size,
        is_train=False,
        mean=getattr(model.visual, "image_mean", None),
        std=getattr(model.visual, "image_std", None),
    )
    return model, tokenizer, preprocess
