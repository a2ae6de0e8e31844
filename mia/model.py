"""open_clip models with no pretrained weights: a named architecture or a small custom one."""
from __future__ import annotations

import open_clip
from omegaconf import OmegaConf


def build_model(model_cfg):
    """Returns (model, tokenizer, preprocess) for `model.name` (+ `model.arch` for custom configs);
    `model_cfg` is the `model` group, as a DictConfig or a plain dict."""
    arch = model_cfg.get("arch")
    if arch:
        arch = OmegaConf.to_container(arch, resolve=True) if OmegaConf.is_config(arch) else arch
        model = open_clip.CLIP(**arch, output_dict=True)
        tokenizer = open_clip.SimpleTokenizer(context_length=arch["text_cfg"]["context_length"])
    else:
        name = model_cfg["name"]
        if name not in open_clip.list_models():
            raise ValueError(f"model.name={name!r} is not an open_clip architecture "
                             "(see open_clip.list_models()) and model.arch is not set")
        model = open_clip.create_model(name, pretrained=None, output_dict=True)
        tokenizer = open_clip.get_tokenizer(name)
    size = model.visual.image_size
    preprocess = open_clip.image_transform(size, is_train=False,
                                           mean=getattr(model.visual, "image_mean", None),
                                           std=getattr(model.visual, "image_std", None))
    return model, tokenizer, preprocess
