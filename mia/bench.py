"""`make bench`: throughput of the pipeline's stages on this machine, as JSON in outputs/bench/.

Each figure is measured beside a plain eager PyTorch loop over the same model and data, so a
regression in the Lightning path shows up as a ratio, not just as a slower machine."""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from open_clip import ClipLoss

from mia.data.synthetic import make_sample
from mia.features import embed
from mia.model import build_model
from mia.train import CLIPTarget

CONF = str(Path(__file__).resolve().parent.parent / "conf")


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "platform": platform.platform(), "torch": torch.__version__}


def write(result: dict, path: Path):
    """Every benchmark's JSON goes to outputs/bench/<name>.json, and is echoed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"bench: {path}")


def synthetic_batch(n, image_size, tokenizer, preprocess):
    samples = [make_sample(i, seed=0, image_size=image_size) for i in range(n)]
    return torch.stack([preprocess(s[0]) for s in samples]), tokenizer([s[1] for s in samples])


def eager_train(model, images, tokens, batch_size, steps):
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    t0 = None
    for step in range(steps + 3):
        if step == 3:  # first steps warm up allocators and kernels
            t0 = time.perf_counter()
        i = (step * batch_size) % (len(images) - batch_size + 1)
        out = model(images[i:i + batch_size], tokens[i:i + batch_size])
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


def lightning_train(cfg, model, images, tokens, steps):
    module = CLIPTarget(model, dict(cfg.train), len(images))
    data = torch.utils.data.TensorDataset(images, tokens, torch.arange(len(images)))
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.train.batch_size, shuffle=True)
    epochs = max(2, round(steps * cfg.train.batch_size / len(images)))
    trainer = L.Trainer(max_epochs=epochs, accelerator="auto", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    return epochs * len(images) / (time.perf_counter() - t0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=["train.progress_bar=false"])
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_model(cfg.model)
    size = cfg.data.corpus.image_size

    t0 = time.perf_counter()
    images, tokens = synthetic_batch(2048, size, tokenizer, preprocess)
    gen_rate = 2048 / (time.perf_counter() - t0)

    result = {"machine": machine(), "model": cfg.model.name, "batch_size": cfg.train.batch_size,
              "corpus_generation_pairs_per_s": gen_rate,
              "train_eager_samples_per_s": eager_train(model, images, tokens, cfg.train.batch_size, args.steps),
              "train_lightning_samples_per_s": lightning_train(cfg, model, images, tokens, args.steps)}
    model.eval()
    t0 = time.perf_counter()
    embed(model, images, tokens, desc="bench features")
    result["features_pairs_per_s"] = len(images) / (time.perf_counter() - t0)
    result["lightning_vs_eager"] = result["train_lightning_samples_per_s"] / result["train_eager_samples_per_s"]
    write(result, Path(args.out) / "spine.json")


if __name__ == "__main__":
    main()
