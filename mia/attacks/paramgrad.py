"""Parameter-gradient attack (white-box, ours; docs/design.md §4).

Each pair's loss against a fixed bank of known non-members, and the norm of that loss's gradient
with respect to the model's parameters (all of them, or the last residual blocks):

    l_k = (CE(img_k vs [txt_k, bank texts]) + CE(txt_k vs [img_k, bank images])) / 2
    g_k = || d l_k / d theta ||

A memorised pair sits in a flat, well-fitted spot: low loss and a small gradient. The score follows
gradnorm's recipe (z-score against D_no, pseudo-members from D_all, logistic regression on
(log l, log g)), through mia/attacks/weak_supervision.py. Both features are float64 logs that stay
distinct however small the loss (per_sample_grad_norms).

The bank's embeddings are taken from the feature store, as constants: the gradient flows only
through the pair's own image and text forward (and logit_scale). So l_k depends on pair k alone,
and the per-sample gradients are exact per-sample quantities, not batch artefacts.

Per-sample gradients are computed batched, `chunk_size` pairs at a time, never one sample at a
time, in two ways that add up to the full squared norm:
- ghost norms for every layer that is a linear map of per-position inputs and runs once per
  forward as a module: nn.Linear (the MLPs), the token embedding, the patch-embedding conv. With
  inputs a_p and output gradients b_p (positions p), the weight gradient is sum_p b_p a_p^T and
      ||sum_p b_p a_p^T||^2 = sum_{p,p'} <a_p, a_p'> <b_p, b_p'>
  so no per-sample [out, in] matrix is ever built (for the token embedding, a_p is a one-hot:
  a dense [vocab, width] gradient avoided). b comes from a zero tensor added to the layer's output
  by a forward hook, whose gradient is the output gradient;
- torch.func for the rest (attention projections, which nn.MultiheadAttention reads as raw
  tensors, layer norms, class / positional embeddings, projections, logit_scale):
  vmap(grad(functional_call)). Fused attention kernels (flash / memory-efficient SDPA, and
  nn.MultiheadAttention's fast path) have no vmap batching rule: torch falls back to a slow
  per-sample loop. So while vmapped the towers run the math SDPA backend, fast path off.
The test and benchmarks/bench_paramgrad.py check both against a loss.backward() loop, sample by
sample.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from mia.attacks.base import Attack, AttackContext, AttackResult
from mia.attacks.contrastive import bank_margins, log_symmetric_loss, split_known, symmetric_loss
from mia.attacks.weak_supervision import feature_means, pseudo_label_scores
from mia.data.splits import AUX_POOL, MEMBER_EVAL, NONMEMBER_EVAL, NONMEMBER_KNOWN
from mia.validate import ConfigError, is_int, require

TOWERS = ("visual.transformer.resblocks", "transformer.resblocks")
# Everything after the last residual block of each tower, plus the temperature.
HEAD = (
    "visual.attn_pool",
    "visual.ln_post.",
    "visual.proj",
    "ln_final.",
    "text_projection",
    "logit_scale",
    "logit_bias",
)


def select_params(model, params: str = "all", last_blocks: int = 1) -> list[str]:
    """Names of the parameters whose gradient is measured: `all`, or `last_blocks`: the last k
    residual blocks of both towers, their final norms and projections, and logit_scale."""
    names = [n for n, _ in model.named_parameters()]
    if params == "all":
        return names
    require(params == "last_blocks", "params", params, "choose 'all' or 'last_blocks'")
    keep = []
    for tower in TOWERS:
        try:
            depth = len(model.get_submodule(tower))
        except AttributeError as e:
            raise ConfigError(
                "params", params, f"needs transformer towers; {tower} not found"
            ) from e
        require(
            is_int(last_blocks) and 0 <= last_blocks <= depth,
            "last_blocks",
            last_blocks,
            f"an integer in [0, {depth}] for {tower}",
        )
        keep += [f"{tower}.{i}." for i in range(depth - last_blocks, depth)]
    return [n for n in names if n.startswith(tuple(keep)) or n.startswith(HEAD)]


def _ghostable(module) -> bool:
    """Layers whose per-sample weight-gradient norm has a ghost identity: linear maps, embeddings,
    and convolutions over non-overlapping patches (the ViT patch embedding is a linear map)."""
    if isinstance(module, nn.Conv2d):
        return (
            module.stride == module.kernel_size
            and module.dilation == (1, 1)
            and module.groups == 1
            and module.padding in (0, (0, 0))
            and module.padding_mode == "zeros"
        )
    if isinstance(module, nn.Embedding):
        return module.max_norm is None
    return isinstance(module, nn.Linear)


def ghost_modules(model, names, image, token) -> dict:
    """{name: (module, output shape of one sample)} of the ghostable modules whose weight is
    measured and that run exactly once, as modules, per forward (nn.MultiheadAttention reads its
    out_proj's weight directly, so that one never fires and stays with vmap)."""
    candidates = {
        n: m for n, m in model.named_modules() if _ghostable(m) and f"{n}.weight" in names
    }
    seen = {}

    def record(name):
        return lambda mod, inp, out: seen.setdefault(name, []).append(out.shape[1:])

    handles = [m.register_forward_hook(record(n)) for n, m in candidates.items()]
    try:
        with torch.no_grad():
            model(image[:1], token[:1])
    finally:
        for h in handles:
            h.remove()
    return {n: (candidates[n], shapes[0]) for n, shapes in seen.items() if len(shapes) == 1}


@contextmanager
def vmappable_attention():
    """Attention that vmap can batch: the math SDPA backend (fused kernels have no batching rule)
    and no nn.MultiheadAttention fast path (taken where a block's parameters need no gradient,
    e.g. the frozen blocks under params=last_blocks; it has no batching rule either)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextmanager
def _ghost_hooks(ghosts: dict, state: dict):
    """While active, each ghost module records its input in state['inputs'] and adds
    state['deltas'][name] (a zero tensor: its gradient is the gradient w.r.t. the output)."""

    def hook(name):
        def add(mod, inp, out):
            if "deltas" not in state:
                return out
            state["inputs"][name] = inp[0]
            return out + state["deltas"][name][None]

        return add

    handles = [m.register_forward_hook(hook(n)) for n, (m, _) in ghosts.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def ghost_sq_norm(module, x, b, with_bias: bool):
    """Squared norm of each sample's gradient of `module`'s weight (and bias) from its input x
    [c, 1, ...] and the gradient b [c, ...] w.r.t. its output. With per-position inputs a_p and
    output gradients b_p, the weight gradient is sum_p b_p a_p^T and
    ||sum_p b_p a_p^T||^2 = sum_{p,p'} <a_p, a_p'> <b_p, b_p'>: T x T products, no [out, in]
    matrix."""
    c = len(b)
    if isinstance(module, nn.Embedding):  # a_p is the one-hot of token p
        ids = x.reshape(c, -1)
        b = b.reshape(c, ids.shape[1], -1)
        if module.padding_idx is not None:  # torch gives the padding row no gradient
            b = b * (ids != module.padding_idx)[..., None]
        same = (ids[:, :, None] == ids[:, None, :]).to(b.dtype)
        return (same * (b @ b.mT)).sum((1, 2))
    if isinstance(module, nn.Conv2d):
        a = F.unfold(x.reshape(c, *x.shape[2:]), module.kernel_size, stride=module.stride).mT
        b = b.flatten(2).mT  # [c, patches, out]
    else:
        a, b = x.reshape(c, -1, x.shape[-1]), b.reshape(c, -1, b.shape[-1])
    sq = ((a @ a.mT) * (b @ b.mT)).sum((1, 2))
    if with_bias and getattr(module, "bias", None) is not None:
        sq = sq + b.sum(1).pow(2).sum(1)
    return sq


def per_sample_grad_norms(model, images, tokens, bank_img, bank_txt, names, chunk_size=64):
    """(log loss [n], log gradient norm [n]), float64, of each pair's bank loss w.r.t. the
    parameters `names`, batched over `chunk_size` pairs at a time. Model, inputs and bank on one
    device.

    The loss is taken in float64 from the margins (mia/attacks/contrastive.py). The towers' backward
    runs in the model's float32, where the gradient of a tiny loss (e^-50 at a logit scale of 100
    and margins of 0.5) would underflow: so each pair's loss is divided by c = the larger of
    sigmoid(x_row), sigmoid(x_col) (its d loss / d margin, held constant), which brings its
    gradient to order 1, and log c is added back to the log norm (the gradient is linear in the
    loss: ||d(l / c)|| = ||dl|| / c)."""
    model.eval()
    names = set(names)
    ghosts = ghost_modules(model, names, images, tokens)
    ghosted = {f"{n}.{k}" for n in ghosts for k in ("weight", "bias")}  # never handed to vmap
    params = {n: p.detach() for n, p in model.named_parameters()}
    trainable = {n: p for n, p in params.items() if n in names and n not in ghosted}
    constants = {
        **{n: p for n, p in params.items() if n not in trainable},
        **dict(model.named_buffers()),
    }
    state = {}

    def sample_loss(trainable, deltas, image, token):
        state["deltas"], state["inputs"] = deltas, {}
        out = functional_call(model, {**trainable, **constants}, (image[None], token[None]))
        row, col = bank_margins(
            out["image_features"][0].double(),
            out["text_features"][0].double(),
            bank_img.double(),
            bank_txt.double(),
            out["logit_scale"].double(),
        )
        log_c = torch.maximum(F.logsigmoid(row), F.logsigmoid(col)).detach()
        scaled = symmetric_loss(row, col) * torch.exp(-log_c)
        return scaled, (log_symmetric_loss(row, col).detach(), log_c, state["inputs"])

    per_sample = vmap(grad(sample_loss, argnums=(0, 1), has_aux=True), in_dims=(None, 0, 0, 0))
    losses, norms = [], []
    with vmappable_attention(), _ghost_hooks(ghosts, state):
        for i in range(0, len(images), chunk_size):
            img, tok = images[i : i + chunk_size], tokens[i : i + chunk_size]
            deltas = {n: img.new_zeros(len(img), *shape) for n, (_, shape) in ghosts.items()}
            (g, g_out), (loss, log_c, inputs) = per_sample(trainable, deltas, img, tok)
            sq = sum(
                torch.linalg.vector_norm(v.reshape(len(img), -1), dim=1).square()
                for v in g.values()
            )
            for n, (module, _) in ghosts.items():
                sq = sq + ghost_sq_norm(module, inputs[n], g_out[n], f"{n}.bias" in names)
            losses.append(loss.detach())
            norms.append(sq.detach().double().log() / 2 + log_c)
    state.clear()
    return torch.cat(losses), torch.cat(norms)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        # the current GPU by index, so that a target already there compares equal and is not copied
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    return torch.device(device)


class ParamGrad(Attack):
    name = "paramgrad"
    reads_known_nonmembers = True  # z-scores its statistics on D_no

    def __init__(
        self,
        *,
        params: str,
        last_blocks: int,
        bank_size: int,
        chunk_size: int,
        device: str,
        C: float,
    ):
        require(params in ("all", "last_blocks"), "params", params, "choose 'all' or 'last_blocks'")
        self.params, self.last_blocks, self.bank_size = params, last_blocks, bank_size
        self.chunk_size, self.device, self.C = chunk_size, device, C

    def run(self, ctx: AttackContext) -> AttackResult:
        device = resolve_device(self.device)
        model = ctx.target.model
        # a copy where the target is not on `device`: the shared target stays where the other
        # attacks expect it
        model = (
            copy.deepcopy(model).to(device) if next(model.parameters()).device != device else model
        )
        names = select_params(model, self.params, self.last_blocks)
        known = ctx.features[NONMEMBER_KNOWN]
        bank_idx, keep = split_known(len(known.uids), self.bank_size, ctx.seed)
        bank = [torch.as_tensor(x[bank_idx], device=device) for x in (known.image, known.text)]

        t0, n = time.perf_counter(), 0
        feats = {}
        for name in (NONMEMBER_KNOWN, AUX_POOL, MEMBER_EVAL, NONMEMBER_EVAL):
            images, tokens = ctx.tensors(name)
            if name == NONMEMBER_KNOWN:
                images, tokens = images[keep], tokens[keep]
            loss, norm = per_sample_grad_norms(
                model, images.to(device), tokens.to(device), *bank, names, self.chunk_size
            )
            feats[name] = torch.stack([loss, norm], 1).cpu().numpy()
            n += len(images)
        seconds = time.perf_counter() - t0
        ghosts = sorted(
            ghost_modules(model, set(names), images[:1].to(device), tokens[:1].to(device))
        )

        (mem, non), diag = pseudo_label_scores(
            feats[NONMEMBER_KNOWN],
            feats[AUX_POOL],
            [feats[MEMBER_EVAL], feats[NONMEMBER_EVAL]],
            ctx.splits.aux_is_member,
            C=self.C,
        )
        selected = set(names)
        n_params = sum(p.numel() for k, p in model.named_parameters() if k in selected)
        diagnostics = {
            "params": self.params,
            "n_params": int(n_params),
            "n_tensors": len(names),
            "bank_size": self.bank_size,
            "chunk_size": self.chunk_size,
            "device": str(device),
            "attention": "math SDPA, MHA fast path off (fused kernels have no vmap batching rule)",
            "ghost_norm_modules": ghosts,
            **diag,
            "raw_means": feature_means(feats),
            "grad_seconds": seconds,
            "grad_samples_per_s": n / seconds,
        }
        if self.params == "last_blocks":
            diagnostics["last_blocks"] = self.last_blocks
        return AttackResult(mem, non, diagnostics)
