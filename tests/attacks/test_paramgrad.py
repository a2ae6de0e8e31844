import copy
import json
import math

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from benchmarks.bench import synthetic_batch
from benchmarks.bench_paramgrad import loop_grad_norms
from mia.attacks.paramgrad import ParamGrad, ghost_sq_norm, per_sample_grad_norms, select_params
from mia.model import build_model
from mia.validate import ConfigError
from tests.helpers.attacks import assert_null, assert_planted, make_attack
from tests.helpers.config import compose_config


@pytest.fixture(scope="module")
def tiny():
    """An untrained tiny CLIP (conf/model/tiny.yaml), 6 pairs and a 5-pair negative bank."""
    cfg = compose_config("logger=none")
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_model(cfg.model)
    model.eval()
    images, tokens = synthetic_batch(11, cfg.data.corpus.image_size, tokenizer, preprocess)
    with torch.no_grad():
        bank = (
            model.encode_image(images[6:], normalize=True),
            model.encode_text(tokens[6:], normalize=True),
        )
    return model, images[:6], tokens[:6], bank


@pytest.mark.parametrize("params", ["all", "last_blocks"])
def test_batched_norms_equal_the_loop(tiny, params):
    """vmap + ghost norms == loss.backward() one sample at a time; chunk 4 leaves a partial
    chunk."""
    model, images, tokens, bank = tiny
    names = select_params(model, params, last_blocks=1)
    log_loss, log_norm = per_sample_grad_norms(model, images, tokens, *bank, names, chunk_size=4)
    ref_loss, ref_norm = loop_grad_norms(model, images, tokens, *bank, names)
    assert log_loss.dtype == log_norm.dtype == torch.float64
    assert torch.allclose(log_loss.exp(), ref_loss.double(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(log_norm.exp(), ref_norm.double(), rtol=1e-4)
    # nothing left behind: hooks removed, MultiheadAttention's fast path restored
    assert not any(m._forward_hooks for m in model.modules())
    assert torch.backends.mha.get_fastpath_enabled()


def test_sharp_temperature_keeps_features_distinct(tiny):
    """Logit scale 100 and a bank every pair beats by a cosine margin of at least 0.5: each loss is
    below e^-50, which float32's logsumexp - positive rounds to one tied 0; the float64 logs stay
    distinct, and the loss scaling keeps the float32 backward from underflowing (its squares of
    order e^-100 would: every log gradient norm finite)."""
    model, images, tokens, _ = tiny
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100))
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(tokens, normalize=True)
    # the untrained towers' embeddings cluster: the opposite of their mean is far from every pair
    # (bank images from the texts' mean, bank texts from the images')
    gen = torch.Generator().manual_seed(0)
    bank = [
        nn.functional.normalize(
            -x.mean(0) + 0.02 * torch.randn(5, x.shape[1], generator=gen), dim=1
        )
        for x in (txt, img)
    ]
    pos = (img * txt).sum(1, keepdim=True)
    assert (img @ bank[1].T - pos).max() <= -0.5 and (txt @ bank[0].T - pos).max() <= -0.5
    row = 100 * torch.cat([pos, img @ bank[1].T], 1)
    assert (row.logsumexp(1) - row[:, 0] == 0).all()  # float32's logsumexp - positive: a tied 0
    names = select_params(model, "all")
    log_loss, log_norm = per_sample_grad_norms(model, images, tokens, *bank, names, chunk_size=4)
    assert torch.isfinite(log_loss).all() and torch.isfinite(log_norm).all()
    assert (log_loss < -40).all()
    assert len(log_loss.unique()) == len(log_norm.unique()) == len(images)


@pytest.mark.parametrize(
    "module, x",
    [
        (nn.Linear(5, 3), torch.randn(4, 1, 7, 5)),
        (
            nn.Embedding(10, 3, padding_idx=0),
            torch.randint(0, 4, (4, 1, 8)),
        ),  # repeated ids and padding
        (nn.Conv2d(2, 3, kernel_size=2, stride=2), torch.randn(4, 1, 2, 6, 4)),
    ],
)
def test_ghost_norm_equals_materialised_gradient(module, x):
    """Ghost identity vs the explicit per-sample gradient of sum(out * b) w.r.t. weight and bias."""
    torch.manual_seed(0)
    b = torch.randn(len(x), *module(x[0]).shape[1:])
    expected = []
    for xi, bi in zip(x, b, strict=True):
        module.zero_grad()
        (module(xi)[0] * bi).sum().backward()
        expected.append(sum(p.grad.pow(2).sum() for p in module.parameters()))
    assert torch.allclose(
        ghost_sq_norm(module, x, b, with_bias=True), torch.stack(expected), rtol=1e-4
    )


def test_select_params(tiny):
    model = tiny[0]
    assert select_params(model, "all") == [n for n, _ in model.named_parameters()]
    last = select_params(model, "last_blocks", last_blocks=1)
    assert {"logit_scale", "visual.proj", "text_projection", "ln_final.weight"} <= set(last)
    assert any(n.startswith("visual.transformer.resblocks.1.") for n in last)
    assert any(n.startswith("transformer.resblocks.1.") for n in last)
    assert not any(".resblocks.0." in n or "embedding" in n or "conv1" in n for n in last)
    head = select_params(model, "last_blocks", last_blocks=0)
    assert not any("resblocks" in n for n in head) and "logit_scale" in head
    with pytest.raises(ConfigError, match="last_blocks"):
        select_params(model, "last_blocks", last_blocks=3)
    with pytest.raises(ConfigError, match=r"attack\.paramgrad\.params"):
        make_attack("paramgrad", params="some")


def test_yaml_instantiates():
    cfg = compose_config("attack=paramgrad", "attack.paramgrad.params=last_blocks")
    attack = instantiate(cfg.attack.paramgrad, _convert_="all")
    assert (
        isinstance(attack, ParamGrad) and attack.params == "last_blocks" and attack.last_blocks == 1
    )


@pytest.mark.parametrize("params", ["all", "last_blocks"])
def test_paramgrad_planted_model(planted_model, params):
    result = make_attack("paramgrad", params=params, device="cpu").run(planted_model)
    assert_planted(result)
    d = result.diagnostics
    assert d["n_known"] == len(planted_model.features["nonmember_known"].uids) - d["bank_size"]
    json.dumps(d)  # plain python types only, for results.json
    means = d["raw_means"]  # memorised pairs: lower loss, smaller parameter gradient
    assert means["member_eval"]["log_loss"] < means["nonmember_eval"]["log_loss"]
    assert means["member_eval"]["log_grad_norm"] < means["nonmember_eval"]["log_grad_norm"]


def test_paramgrad_null_model(null_model):
    assert_null(make_attack("paramgrad", device="cpu").run(null_model))
