"""`make bench`: throughput of the pipeline's stages on this machine, as JSON in outputs/bench/.

Each figure is measured beside a plain eager PyTorch loop over the same model and data in the same
run (fp32, no compile, batches copied from host memory, default AdamW), so the JSON says what the
pipeline's own path (Lightning, bf16 autocast on a GPU, fused AdamW, data held on the device,
optionally torch.compile) buys on this machine, not just how fast the machine is.

    training samples/s and MFU       tiny and vit_b32        train_<model>.json
    (on a CPU: against sgemm's peak)  measured in the same run  train_<model>.json
    feature extraction images/s      same models             train_<model>.json
    data loader images/s             224 px JPEG shards      loader.json (beside the previous
                                                             loader)
    peak GPU memory                  every GPU figure        in each JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from open_clip import ClipLoss
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from mia.data.datamodule import InMemoryPairs, PairDataModule
from mia.data.order import MemberOrder
from mia.data.pairs import PairStream
from mia.data.shards import build_index, decode_image
from mia.data.synthetic import make_sample, write_corpus
from mia.features import embed
from mia.model import build_model
from mia.training.module import CLIPTarget
from mia.training.spec import TrainSpec

CONF = str(Path(__file__).resolve().parent.parent / "conf")
# Dense bf16 peak of the GPUs we expect, in FLOP/s (vendor data sheets, SXM parts).
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
        "torch": torch.__version__,
    }


def peak_flops() -> float | None:
    """bf16 peak of this GPU; None on a CPU (no meaningful MFU there)."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def sgemm_flops(n: int = 2048, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate, FLOP/s, the best of `repeats` n x n products: on
    a CPU the ceiling a training step's FLOP/s is compared with (no vendor peak applies there)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def write(result: dict, path: Path):
    """Every benchmark's JSON goes to outputs/bench/<name>.json, and is echoed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"bench: {path}")


def synthetic_batch(n, image_size, tokenizer, preprocess):
    samples = [make_sample(i, seed=0, image_size=image_size) for i in range(n)]
    return torch.stack([preprocess(s[0]) for s in samples]), tokenizer([s[1] for s in samples])


def train_flops_per_sample(model, images, tokens) -> float:
    """Forward + backward FLOPs of one training sample, counted by torch's FlopCounterMode."""
    with FlopCounterMode(display=False) as counter:
        out = model(images, tokens)
        ClipLoss()(out["image_features"], out["text_features"], out["logit_scale"]).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(images)


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def eager_train(model, images, tokens, batch_size, steps, device):
    """A plain loop: fp32, default AdamW, host-resident data copied to the device every step."""
    model = model.to(device)
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    t0 = None
    for step in range(steps + 3):
        if step == 3:  # first steps warm up allocators and kernels
            _sync()
            t0 = time.perf_counter()
        i = (step * batch_size) % (len(images) - batch_size + 1)
        out = model(images[i : i + batch_size].to(device), tokens[i : i + batch_size].to(device))
        loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync()
    return steps * batch_size / (time.perf_counter() - t0)


class _Timer(L.Callback):
    """Samples/s over the steps after the first few (compile and warm-up excluded)."""

    def __init__(self, skip, batch_size):
        self.skip, self.batch_size, self.t0, self.steps = skip, batch_size, None, 0

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.skip:
            _sync()
            self.t0 = time.perf_counter()
        elif trainer.global_step > self.skip:
            self.steps += 1

    def rate(self):
        _sync()
        return self.steps * self.batch_size / (time.perf_counter() - self.t0)


def pipeline_train(cfg, model, images, tokens, steps, device):
    """The pipeline's own training path: CLIPTarget, MemberOrder, device-resident data."""
    spec = TrainSpec.from_cfg(cfg)
    module = CLIPTarget(model, spec, len(images))
    data = _Members(InMemoryPairs(images, tokens, device), cfg.train.batch_size)
    skip = 5 if not cfg.train.compile else 10
    timer = _Timer(skip, cfg.train.batch_size)
    trainer = L.Trainer(
        max_steps=steps + skip + 1,
        accelerator="auto",
        devices=1,
        logger=False,
        precision=spec.precision_for(device),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, datamodule=data)
    return timer.rate()


class _Members(L.LightningDataModule):
    """Members held on the device, served as mia.data.datamodule.PairDataModule serves them."""

    def __init__(self, pairs: InMemoryPairs, batch_size: int):
        super().__init__()
        self.dataset, self.batch_size = pairs, batch_size

    def token_ids(self):
        return PairDataModule.token_ids(self)

    def train_dataloader(self):
        return self.dataset.loader(
            MemberOrder(len(self.dataset), self.batch_size, seed=0), self.batch_size
        )


def bench_model(model_name: str, steps: int, batch_size: int, n: int, compile_: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                f"model={model_name}",
                f"train.batch_size={batch_size}",
                f"train.compile={compile_}",
                "train.progress_bar=false",
            ],
        )
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_model(cfg.model)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    images, tokens = synthetic_batch(n, size, tokenizer, preprocess)
    flops = train_flops_per_sample(model, images[:8], tokens[:8])
    peak = peak_flops()
    result = {
        "machine": machine(),
        "model": model_name,
        "image_size": size,
        "batch_size": batch_size,
        "precision": TrainSpec.from_cfg(cfg).precision_for(device),
        "compile": compile_,
        "train_flops_per_sample": flops,
        "peak_flops": peak,
    }

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result["eager_train_samples_per_s"] = eager_train(
        model, images, tokens, batch_size, steps, device
    )
    if device.type == "cuda":
        result["eager_peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model, _, _ = build_model(cfg.model)
    result["pipeline_train_samples_per_s"] = pipeline_train(
        cfg, model, images, tokens, steps, device
    )
    if device.type == "cuda":
        result["pipeline_peak_gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    result["pipeline_vs_eager"] = (
        result["pipeline_train_samples_per_s"] / result["eager_train_samples_per_s"]
    )
    sgemm = sgemm_flops() if device.type == "cpu" else None
    result["sgemm_peak_tflops"] = sgemm / 1e12 if sgemm else None
    for path in ("eager", "pipeline"):
        achieved = result[f"{path}_train_samples_per_s"] * flops
        result[f"{path}_train_tflops"] = achieved / 1e12
        result[f"{path}_mfu"] = achieved / peak if peak else None
        result[f"{path}_vs_sgemm"] = achieved / sgemm if sgemm else None

    model = model.to(device).eval()
    for name, autocast in (
        ("eager_features_images_per_s", False),
        ("pipeline_features_images_per_s", True),
    ):
        with torch.autocast(
            device.type, dtype=torch.bfloat16, enabled=autocast and device.type == "cuda"
        ):
            embed(model, images[:batch_size], tokens[:batch_size], desc="warm-up")
            _sync()
            t0 = time.perf_counter()
            embed(
                model,
                images,
                tokens,
                batch_size=max(batch_size, 256),
                desc=f"bench features ({name})",
            )
            _sync()
        result[name] = len(images) / (time.perf_counter() - t0)
    return result


class ReferenceStream(torch.utils.data.IterableDataset):
    """The loader as it was before the tensor path, kept as the baseline: Python's tarfile, PIL
    decoding, open_clip's PIL transform and one tokenizer call per sample. Every sample, one
    pass."""

    def __init__(self, shards, preprocess, tokenizer):
        self.shards, self.preprocess, self.tokenizer = shards, preprocess, tokenizer

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        for shard in self.shards[wid::workers]:
            with tarfile.open(shard, "r|") as tar:
                sample = {}
                for info in tar:
                    key, ext = info.name.rsplit(".", 1)
                    sample[ext] = tar.extractfile(info).read()
                    if len(sample) == 3:  # jpg, txt, json: one whole sample
                        caption = json.loads(sample["json"])["caption"]
                        yield (
                            self.preprocess(decode_image(sample["jpg"])),
                            self.tokenizer([caption])[0],
                            0,
                        )
                        sample = {}


def bench_loader(n: int, image_size: int, workers: int, batch_size: int) -> dict:
    """Decode + preprocess + tokenise 224 px JPEG shards into batches: the pipeline's PairStream
    against the reference (previous) loader, on the same shards in the same run, in one process (the
    per-core rate) and with `workers` loader workers (and pinned memory where there is a GPU)."""
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_corpus(
            Path(tmp) / "shards",
            n,
            shard_size=max(1, n // (2 * max(1, workers))),
            seed=0,
            image_size=image_size,
        )
        shards = sorted(Path(shards).glob("*.tar"))
        with initialize_config_dir(config_dir=CONF, version_base="1.3"):
            cfg = compose("config", overrides=["model=vit_b32"])
        _, tokenizer, preprocess = build_model(cfg.model)
        uids = list(build_index(shards, desc="index bench shards").uids)
        result = {
            "machine": machine(),
            "images": n,
            "image_size": image_size,
            "workers": workers,
            "batch_size": batch_size,
        }
        for loader_name, nw in (("per_core", 0), (f"{workers}_workers", workers)):
            for path in ("reference", "pipeline"):
                if path == "pipeline":
                    stream = PairStream(
                        shards,
                        uids,
                        preprocess,
                        tokenizer,
                        MemberOrder(n, batch_size, seed=0),
                        shuffle_buffer=256,
                    )
                    collate = stream.collate
                else:
                    stream, collate = ReferenceStream(shards, preprocess, tokenizer), None
                loader = DataLoader(
                    stream,
                    batch_size=batch_size,
                    num_workers=nw,
                    collate_fn=collate,
                    pin_memory=nw > 0 and torch.cuda.is_available(),
                    persistent_workers=False,
                    prefetch_factor=4 if nw else None,
                )
                t0, seen = time.perf_counter(), 0
                for images, _, _ in loader:
                    seen += len(images)
                result[f"{path}_loader_images_per_s_{loader_name}"] = seen / (
                    time.perf_counter() - t0
                )
                assert seen == n, f"the {path} loader yielded {seen} of {n} images"
            result[f"pipeline_vs_reference_{loader_name}"] = (
                result[f"pipeline_loader_images_per_s_{loader_name}"]
                / result[f"reference_loader_images_per_s_{loader_name}"]
            )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    gpu = torch.cuda.is_available()
    parser.add_argument("--models", default="tiny,vit_b32")
    parser.add_argument("--steps", type=int, default=100 if gpu else 20)
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=gpu,
        help="torch.compile the pipeline path (default: on a GPU)",
    )
    parser.add_argument(
        "--loader-images", type=int, default=8192 if gpu else 1024, help="0: no loader figure"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument(
        "--batch-size", type=int, help="every model's batch (default: sized to the machine)"
    )
    parser.add_argument(
        "--pairs", type=int, help="pairs held in memory per model (default: sized to the machine)"
    )
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args(argv)
    # batch, pairs held in memory: big enough to fill an H100, small enough for a 2-core CPU
    shapes = {
        "tiny": (1024, 8192) if gpu else (128, 1024),
        "vit_b32": (256, 1024) if gpu else (16, 64),
    }
    for name in filter(None, args.models.split(",")):
        batch, n = shapes.get(name, (64, 256))
        batch, n = args.batch_size or batch, args.pairs or n
        steps = args.steps if name == "tiny" or gpu else max(3, args.steps // 5)
        write(
            bench_model(name, steps, batch, n, args.compile), Path(args.out) / f"train_{name}.json"
        )
    if args.loader_images:
        write(
            bench_loader(args.loader_images, 224, args.workers, min(256, args.loader_images)),
            Path(args.out) / "loader.json",
        )


if __name__ == "__main__":
    main()
