import pytest
from hydra.utils import instantiate

from mia.attacks.base import Attack
from mia.model import build_model


def test_default_config_composes(make_cfg):
    cfg = make_cfg(small=False)
    assert cfg.data.source == "synthetic" and cfg.data.size == "1k"
    assert cfg.model.name == "tiny" and cfg.train.precision == "auto"
    assert cfg.logger.backend == "none"
    assert set(cfg.attack) == {"csa"}
    assert isinstance(instantiate(cfg.attack.csa), Attack)


@pytest.mark.parametrize("group", ["model=vit_b32", "model=vit_b16", "model=rn50", "data=webdataset",
                                   "logger=wandb", "logger=none"])
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
