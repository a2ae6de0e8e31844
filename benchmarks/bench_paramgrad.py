"""Per-sample parameter-gradient norms (mia/attacks/paramgrad.py): batched (vmap + ghost-norm token
embedding) against the plain one-sample-at-a-time loop (loss.backward per sample), same model, same
inputs, same machine. Checks both give the same norms; writes outputs/bench/paramgrad.json.

    python -m benchmarks.bench_paramgrad     # tiny model (conf/model/tiny.yaml), + ViT-B/32 on CUDA
    python -m benchmarks.bench_paramgrad --model vit_b32 --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from benchmarks.bench import CONF, machine, synthetic_batch, write
from mia.attacks.contrastive import bank_losses
from mia.attacks.paramgrad import per_sample_grad_norms, resolve_device, select_params
from mia.features import embed
from mia.model import build_model

# (model, device type) -> figures to reach
GOALS = {
    ("tiny", "cpu"): {"speedup": 20.0},
    ("ViT-B-32", "cuda"): {"batched_samples_per_s": 3000.0},
}


def loop_grad_norms(model, images, tokens, bank_img, bank_txt, names):
    """The reference: one forward and loss.backward per sample, then the norm of all .grad."""
    model.eval()
    wanted = set(names)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in wanted)
    params = [p for n, p in model.named_parameters() if n in wanted]
    losses, norms = [], []
    try:
        for i in range(len(images)):
            model.zero_grad(set_to_none=True)
            out = model(images[i : i + 1], tokens[i : i + 1])
            loss = bank_losses(
                out["image_features"], out["text_features"], bank_img, bank_txt, out["logit_scale"]
            ).sum()
            loss.backward()
            losses.append(loss.detach())
            norms.append(torch.sqrt(sum(p.grad.pow(2).sum() for p in params if p.grad is not None)))
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
    return torch.stack(losses), torch.stack(norms)


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def measure(
    model_name: str,
    device: torch.device,
    n: int,
    loop_n: int,
    chunk_size: int,
    bank_size: int,
    params: str = "all",
) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model_name}", "logger=none"])
    torch.manual_seed(0)
    model, tokenizer, preprocess = build_model(cfg.model)
    model = model.to(device).eval()
    images, tokens = synthetic_batch(
        n + bank_size, cfg.data.corpus.image_size, tokenizer, preprocess
    )
    images, tokens = images.to(device), tokens.to(device)
    bank_img, bank_txt, _ = embed(
        model, images[n:], tokens[n:], desc="bank"
    )  # the known non-members
    bank = [torch.as_tensor(x, device=device) for x in (bank_img, bank_txt)]
    images, tokens = images[:n], tokens[:n]
    names = select_params(model, params)

    def batched(k):
        return per_sample_grad_norms(model, images[:k], tokens[:k], *bank, names, chunk_size)

    def loop(k):
        return loop_grad_norms(model, images[:k], tokens[:k], *bank, names)

    def plain(k):
        """Context, not a competitor: one ordinary batched forward + backward of the summed loss
        (no per-sample anything), the floor a per-sample method can hardly go below."""
        for i in range(0, k, chunk_size):
            out = model(images[i : min(k, i + chunk_size)], tokens[i : min(k, i + chunk_size)])
            loss = bank_losses(
                out["image_features"], out["text_features"], *bank, out["logit_scale"]
            )
            loss.sum().backward()
        model.zero_grad(set_to_none=True)

    batched(min(n, chunk_size)), loop(2)  # warm-up: allocators, kernels, vmap tracing caches
    (b_loss, b_norm), b_s = _timed(lambda: batched(n), device)
    (l_loss, l_norm), l_s = _timed(lambda: loop(loop_n), device)
    plain(min(n, chunk_size))
    _, p_s = _timed(lambda: plain(n), device)
    b_loss, b_norm = b_loss.exp(), b_norm.exp()  # per_sample_grad_norms gives float64 logs
    l_loss, l_norm = l_loss.double(), l_norm.double()
    rel = ((b_norm[:loop_n] - l_norm) / l_norm).abs().max().item()
    same = bool(
        torch.allclose(b_norm[:loop_n], l_norm, rtol=1e-3, atol=1e-5)
        and torch.allclose(b_loss[:loop_n], l_loss, rtol=1e-4, atol=1e-5)
    )
    return {
        "model": cfg.model.name,
        "device": str(device),
        "params": params,
        "n_params": int(sum(p.numel() for k, p in model.named_parameters() if k in set(names))),
        "batched_n": n,
        "loop_n": loop_n,
        "chunk_size": chunk_size,
        "bank_size": bank_size,
        "batched_samples_per_s": n / b_s,
        "loop_samples_per_s": loop_n / l_s,
        "speedup": (n / b_s) / (loop_n / l_s),
        "plain_batched_backward_samples_per_s": n / p_s,
        "allclose": same,
        "max_rel_err_norm": rel,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny", help="a conf/model/ name: tiny, vit_b32, ...")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--n", type=int, default=512, help="samples timed in the batched version")
    parser.add_argument(
        "--loop-n", type=int, default=64, help="samples timed in the loop (and compared)"
    )
    parser.add_argument(
        "--chunk-size", type=int, default=256, help="pairs per vmap call (64 for ViT-B/32)"
    )
    parser.add_argument("--bank-size", type=int, default=63)
    parser.add_argument("--params", default="all", choices=["all", "last_blocks"])
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--out", default="outputs/bench")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    runs = [
        measure(
            args.model, device, args.n, args.loop_n, args.chunk_size, args.bank_size, args.params
        )
    ]
    if device.type == "cuda" and args.model != "vit_b32":
        runs.append(
            measure(
                "vit_b32",
                device,
                args.n,
                args.loop_n,
                min(args.chunk_size, 64),
                args.bank_size,
                args.params,
            )
        )
    for r in runs:
        r["goal"] = GOALS.get((r["model"], torch.device(r["device"]).type), {})
        r["goal_met"] = all(r[k] >= v for k, v in r["goal"].items()) if r["goal"] else None
    result = {"machine": machine(), "model": runs[0]["model"], "runs": runs}
    write(result, Path(args.out) / "paramgrad.json")


if __name__ == "__main__":
    main()
