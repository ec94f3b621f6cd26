"""Shared open_clip oracle for CoCa parity fixtures.

This module builds an open_clip CoCa model from a config, overwrites every
parameter with deterministic, non-degenerate random values, computes the
reference outputs and gradients in float64, and writes a fixture directory in
the layout the Rust `coca parity` command reads (see README.md in this folder).

Why float64: the fixture stores f32 weights, and the Rust side runs in f32.
Computing the reference with a float64 copy of exactly those f32 weights makes
the stored reference the (almost) exact answer for the stored weights, so the
Rust error is measured against the truth rather than against another f32 run.
An f32 open_clip run is still made and its distance to the float64 answer is
recorded in meta.json: it is the noise floor the Rust side can be held to.
"""

from __future__ import annotations

import json
import math
import platform
import re
import resource
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import open_clip
import safetensors
import torch
from open_clip.loss import CoCaLoss
from safetensors.torch import save_file
from torch import nn

# Loss weights of the reference loss (open_clip's training defaults for CoCa).
CAPTION_LOSS_WEIGHT = 2.0
CLIP_LOSS_WEIGHT = 1.0
PAD_ID = 0

# Names of the float outputs in io.safetensors (grads come on top as grad.<name>).
FLOAT_OUTPUTS = (
    "image_features",
    "image_embs",
    "text_features",
    "text_tokens",
    "logits",
    "logit_scale",
    "loss_contrastive",
    "loss_caption",
    "loss",
)
INT_OUTPUTS = ("labels",)
INPUTS = ("image", "text")

WEIGHTS_SAFETENSORS = "open_clip_model.safetensors"
WEIGHTS_BIN = "open_clip_pytorch_model.bin"


class OracleError(RuntimeError):
    """A reference output failed a sanity check (saturated, non-finite, zero gradient...)."""


# --------------------------------------------------------------------------- model


def build_model(model: Union[str, Dict[str, Any]]) -> open_clip.CoCa:
    """Build a CoCa model through `open_clip.create_model`, as a user would.

    `model` is either a built-in open_clip model name (e.g. "coca_ViT-B-32") or a
    config dict in the schema of open_clip's model_configs/*.json. A dict goes
    through the `local-dir:` schema so it takes exactly the code path of
    `create_model('coca_ViT-B-32')` (same class choice, same overrides) without
    touching open_clip's global config registry.
    """
    if isinstance(model, str):
        net = open_clip.create_model(model, device="cpu", precision="fp32")
    else:
        with tempfile.TemporaryDirectory(prefix="coca_cfg_") as tmp:
            cfg_path = Path(tmp) / "open_clip_config.json"
            cfg_path.write_text(json.dumps({"model_cfg": model}))
            net = open_clip.create_model(f"local-dir:{tmp}", device="cpu", precision="fp32")
    if not isinstance(net, open_clip.CoCa):
        raise OracleError(f"config built a {type(net).__name__}, not open_clip.CoCa")
    # Dropout-free by construction; fail loudly if a config ever enables one,
    # because the reference would then be random.
    for name, mod in net.named_modules():
        if isinstance(mod, nn.Dropout) and mod.p > 0:
            raise OracleError(f"module {name} has dropout p={mod.p}; the oracle needs a deterministic model")
        if isinstance(mod, nn.MultiheadAttention) and mod.dropout > 0:
            raise OracleError(f"attention {name} has dropout {mod.dropout}")
    net.eval()
    return net


def model_config(model: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
    """The open_clip config dict for a built-in name, or the dict itself."""
    if isinstance(model, str):
        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise OracleError(f"open_clip has no built-in model config named {model!r}")
        return cfg
    return model


def _param_seed(seed: int, name: str) -> int:
    # One generator per parameter, keyed by its name, so a tensor's values do
    # not depend on how many parameters came before it.
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62)


def _layer_norm_weights(model: nn.Module) -> set:
    names = set()
    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.LayerNorm) and mod.weight is not None:
            names.add(f"{mod_name}.weight")
    return names


# The attentional poolers' query/key projections get this gain (attention
# logits ~gain^2 as wide). With plain 1/fan_in weights a pooler's softmax over
# hundreds of patches is nearly flat, so its outputs are near-identical
# averages; the decoder's cross-attention then barely depends on its queries
# and those gradients (cross_attn.*.ln_1) sink into f32 rounding noise
# (open_clip's own f32 run missed the 1e-3 gradient tolerance there on
# ViT-L-14). Sharper pooling, as in trained models, fixes that without making
# the deep towers chaotic (a gain on every attention layer did).
POOLER_QK_GAIN = 2.0

# Parameters that are multiplied as `x @ P` (shape [in, out]) rather than
# through nn.Linear (shape [out, in]); their fan-in is dim 0.
_RIGHT_MULTIPLIED = ("visual.proj", "text.text_projection", "text_decoder.text_projection")


def perturbation_rule(name: str, shape: Sequence[int], ln_weights: set) -> tuple:
    """Return (description, fn(noise) -> value) for one parameter.

    Every parameter gets real random values: open_clip's own init leaves the LM
    head `text_decoder.text_projection` uninitialised and every attention and
    LayerNorm bias at zero, so a bias or LM-head mistake on the Rust side would
    be invisible with it. Weight matrices get N(0, 1/fan_in) so activations stay
    O(1) through the residual stream and attention softmaxes do not saturate.
    """
    if name == "logit_scale":
        return "ln(1/0.07) + 0.05 N", lambda z: math.log(1 / 0.07) + 0.05 * z
    if name == "logit_bias":
        return "-1 + 0.1 N", lambda z: -1.0 + 0.1 * z
    if name in ln_weights:
        return "1 + 0.1 N", lambda z: 1.0 + 0.1 * z
    if name.endswith("bias"):
        return "0.05 N", lambda z: 0.05 * z
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("token_embedding.weight"):
        return "0.5 N", lambda z: 0.5 * z
    if leaf == "positional_embedding":
        return "0.2 N", lambda z: 0.2 * z
    if leaf in ("class_embedding", "cls_emb", "query"):
        return "0.5 N", lambda z: 0.5 * z
    if name in _RIGHT_MULTIPLIED:
        std = 1.0 / math.sqrt(shape[0])
        return f"N(0, 1/{shape[0]})", lambda z: std * z
    if len(shape) == 4:  # conv1: [out, in, kh, kw]
        fan_in = shape[1] * shape[2] * shape[3]
        std = 1.0 / math.sqrt(fan_in)
        return f"N(0, 1/{fan_in})", lambda z: std * z
    if len(shape) == 2 and ".attn_pool" in name and leaf in ("q_proj_weight", "k_proj_weight", "in_proj_weight"):
        std = 1.0 / math.sqrt(shape[1])
        gain = torch.full((shape[0], 1), POOLER_QK_GAIN)
        if leaf == "in_proj_weight":  # packed [q; k; v]: leave the value rows alone
            gain[2 * shape[0] // 3 :] = 1.0
            desc = f"q,k rows N(0, {POOLER_QK_GAIN**2:g}/{shape[1]}), v rows N(0, 1/{shape[1]})"
        else:
            desc = f"N(0, {POOLER_QK_GAIN**2:g}/{shape[1]})"
        return desc, lambda z: std * gain * z
    if len(shape) == 2:  # nn.Linear / MultiheadAttention projections: [out, in]
        std = 1.0 / math.sqrt(shape[1])
        return f"N(0, 1/{shape[1]})", lambda z: std * z
    raise OracleError(f"no perturbation rule for parameter {name} of shape {tuple(shape)}")


@torch.no_grad()
def perturb_(model: nn.Module, seed: int) -> Dict[str, str]:
    """Overwrite every parameter in place (f32) with seeded random values.

    Returns {parameter name: rule description} for meta.json.
    """
    ln_weights = _layer_norm_weights(model)
    rules = {}
    for name, p in model.named_parameters():
        desc, fn = perturbation_rule(name, p.shape, ln_weights)
        gen = torch.Generator().manual_seed(_param_seed(seed, name))
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
        p.copy_(fn(noise).to(p.dtype))
        rules[name] = desc
    return rules


# --------------------------------------------------------------------------- inputs


def make_images(cfg: Dict[str, Any], batch: int, seed: int) -> torch.Tensor:
    """Random N(0, 1) pixels, which is how normalised pixels are distributed."""
    size = cfg["vision_cfg"].get("image_size", 224)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    gen = torch.Generator().manual_seed(seed + 17)
    return torch.randn(batch, 3, h, w, generator=gen, dtype=torch.float32)


def synthetic_rows(vocab: int, context: int, seed: int, batch: int = 4) -> tuple:
    """Token ids for the CLS/pad-mask edge cases with a small vocab.

    sot = vocab-2, eot = vocab-1, pad = 0, content tokens in [1, vocab-3].
    Rows: short caption (mostly padding), medium, exactly context-1 real tokens
    plus one pad, and context real tokens with no pad at all (as open_clip's
    tokenizer makes for a truncated caption: eot in the last slot).
    Other batch sizes cycle through these four kinds.
    Returns (text [batch, context] i64, sot, eot, row descriptions).
    """
    sot, eot = vocab - 2, vocab - 1
    gen = torch.Generator().manual_seed(seed + 29)
    kinds = [
        (7, "short"),
        (max(3, context // 2), "medium"),
        (context - 1, f"{context - 1} real + 1 pad"),
        (context, f"{context} real, no pad"),
    ]
    lengths = [kinds[i % 4][0] for i in range(batch)]
    names = [kinds[i % 4][1] for i in range(batch)]
    text = torch.full((batch, context), PAD_ID, dtype=torch.long)
    for row, n in enumerate(lengths):
        content = torch.randint(1, vocab - 2, (n - 2,), generator=gen)
        text[row, 0] = sot
        text[row, 1 : n - 1] = content
        text[row, n - 1] = eot
    return text, sot, eot, [f"{d} ({n} tokens)" for d, n in zip(names, lengths, strict=True)]


CAPTIONS = [
    "a photo of a cat.",
    # Long enough to be truncated at the context length: no padding at all.
    "a very long caption that goes on and on about a small brown dog running across a wide green "
    "field under a bright blue summer sky while children laugh and play with a red ball near an "
    "old wooden fence next to a quiet river where ducks swim slowly past tall reeds and a fisherman "
    "waits patiently for a bite in the warm afternoon light, as a train rumbles over the stone "
    "bridge in the distance and clouds gather slowly above the hills beyond the village church",
    # Cut to exactly context-1 real tokens + 1 pad below.
    "an aerial view of a busy harbour with many colourful boats, cranes loading containers onto "
    "ships, gulls circling above the water, a lighthouse on the rocky point, people walking along "
    "the pier, and a ferry leaving for the islands on the horizon at dusk with orange clouds "
    "reflected in the calm water while fishermen mend their nets beside stacks of wooden crates "
    "and a small dog sleeps in the shade of an old stone warehouse",
    "two people riding bicycles down a cobblestone street lined with cafes.",
]


def tokenizer_rows(model_name: Optional[str], context: int, batch: int) -> tuple:
    """Real open_clip token ids for `batch` captions (cycling through CAPTIONS).

    The third caption is cut to exactly context-1 real tokens (eot moved into
    slot context-2, last slot pad) so the CLS-mask edge case is also covered.
    Returns (text [batch, context] i64, sot, eot, row descriptions).
    """
    tok = (
        open_clip.get_tokenizer(model_name)
        if model_name
        else open_clip.tokenizer.SimpleTokenizer(context_length=context)
    )
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch)]
    text = tok(captions, context_length=context).long()
    sot, eot = int(tok.sot_token_id), int(tok.eot_token_id)
    descs = []
    for i in range(batch):
        if i % len(CAPTIONS) == 2:
            if int((text[i] != PAD_ID).sum()) != context:
                raise OracleError("caption 2 must fill the context to be cut to context-1 tokens")
            text[i, context - 2] = eot
            text[i, context - 1] = PAD_ID
        n = int((text[i] != PAD_ID).sum())
        descs.append(f"caption {i % len(CAPTIONS)} ({n} real tokens)")
    return text, sot, eot, descs


# --------------------------------------------------------------------------- reference


@dataclass
class Reference:
    """Outputs of one oracle run, in the model's dtype."""

    outputs: Dict[str, torch.Tensor]
    grads: Dict[str, torch.Tensor] = field(default_factory=dict)
    image_features_squeezed: bool = False


def run_reference(
    model: open_clip.CoCa,
    image: torch.Tensor,
    text: torch.Tensor,
    grads: bool,
    grad_dtype: Optional[torch.dtype] = None,
) -> Reference:
    """Run open_clip's forward, CoCaLoss and (optionally) backward.

    Extra outputs (image_embs, text_tokens, the encode_* features) come from
    separate no-grad calls of the same public/private open_clip methods the
    Rust side mirrors. `grad_dtype` converts each gradient as it is collected
    (and frees the original), which keeps ViT-L-14 in f64 within memory.
    """
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(grads):
        out = model(image, text)
        img_feat = out["image_features"]
        squeezed = img_feat.dim() == 3
        if squeezed:
            # 'parallel'/'cascade' pooling returns [B, 1, E]; CoCaLoss cannot
            # take that shape (its matmul breaks), so it gets the squeezed one.
            img_feat = img_feat.squeeze(1)
        loss_fn = CoCaLoss(caption_loss_weight=CAPTION_LOSS_WEIGHT, clip_loss_weight=CLIP_LOSS_WEIGHT, pad_id=PAD_ID)
        clip_loss, caption_loss = loss_fn(
            img_feat, out["text_features"], out["logits"], out["labels"], out["logit_scale"]
        )
        loss = clip_loss + caption_loss
        if grads:
            collected = _backward(model, loss, grad_dtype)

    with torch.no_grad():
        image_features = model.encode_image(image)
        if image_features.dim() == 3:
            image_features = image_features.squeeze(1)
        _, image_embs = model._encode_image(image)
        text_features = model.encode_text(text)
        _, text_tokens = model._encode_text(text)

    outputs = {
        "image_features": image_features,
        "image_embs": image_embs,
        "text_features": text_features,
        "text_tokens": text_tokens,
        "logits": out["logits"].detach(),
        "labels": out["labels"].detach(),
        "logit_scale": out["logit_scale"].detach().reshape(()),
        "loss_contrastive": clip_loss.detach().reshape(()),
        "loss_caption": caption_loss.detach().reshape(()),
        "loss": loss.detach().reshape(()),
    }
    grad_map = {}
    if grads:
        for name, _ in model.named_parameters():
            if name not in collected:
                raise OracleError(f"parameter {name} received no gradient")
            grad_map[name] = collected[name]
    return Reference(outputs=outputs, grads=grad_map, image_features_squeezed=squeezed)


def _backward(model: nn.Module, loss: torch.Tensor, grad_dtype: Optional[torch.dtype]) -> Dict[str, torch.Tensor]:
    """Backpropagate `loss`, taking each parameter's gradient as soon as it is final.

    A post-accumulate hook converts the gradient to `grad_dtype` and frees the
    original at once, so a float64 ViT-L-14 never holds a full set of f64
    gradients next to the f32 copies (about 5 GB less at peak).
    """
    collected: Dict[str, torch.Tensor] = {}
    handles = []
    for name, p in model.named_parameters():

        def take(param: torch.Tensor, name: str = name) -> None:
            collected[name] = param.grad.detach() if grad_dtype is None else param.grad.detach().to(grad_dtype)
            param.grad = None

        handles.append(p.register_post_accumulate_grad_hook(take))
    try:
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    return collected


def check_not_degenerate(ref: Reference, strict: bool = True) -> Dict[str, Any]:
    """Sanity checks that make the fixture able to catch mistakes.

    Fails (or, with strict=False, only reports) when an output is non-finite,
    a softmax is one-hot, a loss is ~0, or a gradient is all zero.
    """
    problems = []
    o = ref.outputs
    for k, v in o.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            problems.append(f"{k} has non-finite values")
    probs = torch.softmax(o["logits"].double(), dim=-1)
    max_prob_lm = float(probs.max(dim=-1).values.max())
    mean_max_prob_lm = float(probs.max(dim=-1).values.mean())
    clip_logits = float(o["logit_scale"]) * o["image_features"].double() @ o["text_features"].double().T
    max_prob_clip = float(torch.softmax(clip_logits, dim=-1).max())
    # One confident row is fine (random features can be far apart); a
    # (nearly) one-hot softmax, or confident rows on average, is not: the
    # gradients through it would vanish and hide mistakes.
    mean_max_prob_clip = float(torch.softmax(clip_logits, dim=-1).max(dim=-1).values.mean())
    if max_prob_lm > 0.999 or mean_max_prob_lm > 0.9:
        problems.append(f"LM softmax is saturated (max prob {max_prob_lm:.4f}, mean {mean_max_prob_lm:.4f})")
    if max_prob_clip > 0.999 or mean_max_prob_clip > 0.9:
        problems.append(
            f"contrastive softmax is saturated (max prob {max_prob_clip:.4f}, mean {mean_max_prob_clip:.4f})"
        )
    if float(o["loss_contrastive"]) < 0.05:
        problems.append(f"contrastive loss ~0 ({float(o['loss_contrastive']):.3g})")
    if float(o["loss_caption"]) < 0.1:
        problems.append(f"caption loss ~0 ({float(o['loss_caption']):.3g})")
    zero_grads = [n for n, g in ref.grads.items() if not bool((g != 0).any())]
    if zero_grads:
        problems.append(f"all-zero gradients: {zero_grads}")
    grad_norms = {n: float(g.double().norm()) for n, g in ref.grads.items()}
    stats = {
        "lm_softmax_max_prob": max_prob_lm,
        "lm_softmax_mean_max_prob": mean_max_prob_lm,
        "contrastive_softmax_max_prob": max_prob_clip,
        "contrastive_softmax_mean_max_prob": mean_max_prob_clip,
        "min_grad_norm": min(grad_norms.values()) if grad_norms else None,
        "min_grad_norm_param": min(grad_norms, key=grad_norms.get) if grad_norms else None,
        "max_grad_norm": max(grad_norms.values()) if grad_norms else None,
    }
    if problems:
        if strict:
            raise OracleError("degenerate reference: " + "; ".join(problems))
        stats["problems"] = problems
    return stats


def compare(ref64: Reference, run32: Reference) -> Dict[str, Any]:
    """Distance of an f32 open_clip run from the float64 reference (the noise floor)."""
    result: Dict[str, Any] = {"max_abs": {}, "max_rel_scalar": {}}
    for k in FLOAT_OUTPUTS:
        a, b = ref64.outputs[k].double(), run32.outputs[k].double()
        diff = float((a - b).abs().max())
        result["max_abs"][k] = diff
        if a.dim() == 0:
            result["max_rel_scalar"][k] = diff / max(abs(float(a)), 1e-30)
    if run32.grads:
        errs = {}
        for name, g64 in ref64.grads.items():
            g64d = g64.double()
            diff = float((g64d - run32.grads[name].double()).norm())
            ref_norm = float(g64d.norm())
            errs[name] = diff / ref_norm if ref_norm > 0 else (0.0 if diff == 0 else math.inf)
        ranked = sorted(errs, key=errs.get, reverse=True)
        result["grad_max_rel_norm_err"] = errs[ranked[0]]
        result["grad_worst_param"] = ranked[0]
        # Parameters with tiny gradients (e.g. a cross-attention ln_1 whose
        # softmax is nearly flat) carry the largest relative f32 error; list
        # them so a Rust tolerance can be judged against this floor.
        result["grad_worst_10"] = {n: errs[n] for n in ranked[:10]}
    return result


# --------------------------------------------------------------------------- writing


def save_weights(model: nn.Module, out_dir: Path, write_bin: bool) -> None:
    """Store the f32 state dict as safetensors (and optionally torch .bin)."""
    state = model.state_dict()
    for k, v in state.items():
        if v.dtype != torch.float32:
            raise OracleError(f"weight {k} is {v.dtype}, expected float32")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(out_dir / WEIGHTS_SAFETENSORS))
    if write_bin:
        torch.save(state, out_dir / WEIGHTS_BIN)


def io_tensors(image: torch.Tensor, text: torch.Tensor, ref: Reference) -> Dict[str, torch.Tensor]:
    """Inputs, outputs and grads in the stored dtypes (floats f32, ints i64)."""

    # Clones: `labels` is a view of `text`, and safetensors refuses tensors
    # that share memory. The inputs and outputs are small; grads are not copied.
    def packed(t: torch.Tensor) -> torch.Tensor:
        return t.clone(memory_format=torch.contiguous_format)

    tensors = {"image": packed(image.float()), "text": packed(text.long())}
    for k in FLOAT_OUTPUTS:
        tensors[k] = packed(ref.outputs[k].float())
    for k in INT_OUTPUTS:
        tensors[k] = packed(ref.outputs[k].long())
    for name, g in ref.grads.items():
        tensors[f"grad.{name}"] = g.float().contiguous()
    return tensors


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class FixtureSpec:
    """Everything needed to write one fixture directory."""

    name: str
    model: Union[str, Dict[str, Any]]
    out_dir: Path
    seed: int
    batch: int = 4
    grads: bool = True
    write_bin: bool = True
    f32_check: bool = True
    strict: bool = True
    tokens: str = "synthetic"  # "synthetic" (small vocab) or "tokenizer" (real captions)
    record_timings: bool = False
    notes: List[str] = field(default_factory=list)


def make_fixture(spec: FixtureSpec, log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Build, perturb, save weights, compute the f64 reference, write io + meta.

    Memory plan (matters for ViT-L-14): the f32 model is converted in place to
    f64 (never two copies), f64 grads are turned into f32 one at a time, then
    the model goes back to f32 (exact) for the noise-floor run.
    """
    timings: Dict[str, float] = {}
    t0 = time.perf_counter()
    out_dir = spec.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = model_config(spec.model)

    torch.manual_seed(spec.seed)  # open_clip's own init; overwritten but keeps runs identical
    model = build_model(spec.model)
    rules = perturb_(model, spec.seed)
    n_params = sum(p.numel() for p in model.parameters())
    timings["build_perturb_s"] = time.perf_counter() - t0
    log(f"[{spec.name}] built {type(model).__name__} with {n_params:,} parameters")

    t = time.perf_counter()
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_weights(model, out_dir, spec.write_bin)
    timings["save_weights_s"] = time.perf_counter() - t

    image = make_images(cfg, spec.batch, spec.seed)
    context = cfg["text_cfg"].get("context_length", 77)
    vocab = cfg["text_cfg"].get("vocab_size", 49408)
    if spec.tokens == "tokenizer":
        text, sot, eot, row_desc = tokenizer_rows(
            spec.model if isinstance(spec.model, str) else None, context, spec.batch
        )
    else:
        text, sot, eot, row_desc = synthetic_rows(vocab, context, spec.seed, spec.batch)
    if int(text.max()) >= vocab:
        raise OracleError(f"token id {int(text.max())} out of vocab {vocab}")

    # Reference: float64 copy of exactly the stored f32 weights.
    t = time.perf_counter()
    model.double()
    # Keep f64 outputs (small) for the comparison; grads go to f32 right away.
    ref = run_reference(model, image.double(), text, spec.grads, grad_dtype=torch.float32)
    timings["reference_f64_s"] = time.perf_counter() - t
    stats = check_not_degenerate(ref, strict=spec.strict)

    noise = None
    if spec.f32_check:
        t = time.perf_counter()
        model.float()  # exact: every value came from f32
        run32 = run_reference(model, image, text, spec.grads)
        noise = compare(ref, run32)
        del run32
        timings["check_f32_s"] = time.perf_counter() - t
        worst = max(noise["max_abs"].values())
        log(f"[{spec.name}] f32 vs f64: worst max-abs {worst:.2e}, grads {noise.get('grad_max_rel_norm_err', 'n/a')}")
    del model

    t = time.perf_counter()
    tensors = io_tensors(image, text, ref)
    save_file(tensors, str(out_dir / "io.safetensors"))
    timings["save_io_s"] = time.perf_counter() - t

    notes = list(spec.notes)
    if ref.image_features_squeezed:
        notes.append(
            "attentional_pool is 'parallel'/'cascade': open_clip's encode_image/forward return image_features of "
            "shape [B, 1, E]; stored squeezed to [B, E], and CoCaLoss was given the squeezed features (with the "
            "[B, 1, E] tensor open_clip's CoCaLoss fails: 'mm: mat1 and mat2 shapes cannot be multiplied')."
        )
    timings["total_s"] = time.perf_counter() - t0
    meta = {
        "name": spec.name,
        "open_clip_version": open_clip.__version__,
        "torch_version": torch.__version__,
        "safetensors_version": safetensors.__version__,
        "python_version": platform.python_version(),
        "seed": spec.seed,
        "batch": spec.batch,
        "n_params": n_params,
        "precision": {
            "weights": "float32 (both weight files hold identical values)",
            "reference": "float64 copy of the stored f32 weights and inputs; stored cast to f32",
            "ints": "int64",
        },
        "tokens": {
            "source": spec.tokens,
            "sot_id": sot,
            "eot_id": eot,
            "pad_id": PAD_ID,
            "vocab_size": vocab,
            "context_length": context,
            "rows": row_desc,
        },
        "loss": {
            "class": "open_clip.loss.CoCaLoss",
            "caption_loss_weight": CAPTION_LOSS_WEIGHT,
            "clip_loss_weight": CLIP_LOSS_WEIGHT,
            "pad_id": PAD_ID,
            "definition": "loss_contrastive and loss_caption are the weighted parts CoCaLoss returns; "
            "loss = loss_contrastive + loss_caption; grads are d(loss)/d(param)",
        },
        "inputs": list(INPUTS),
        "outputs": list(FLOAT_OUTPUTS) + list(INT_OUTPUTS),
        "grads": sorted(ref.grads) if spec.grads else [],
        "shapes": {k: list(v.shape) for k, v in tensors.items() if not k.startswith("grad.")},
        "weights_files": [WEIGHTS_SAFETENSORS] + ([WEIGHTS_BIN] if spec.write_bin else []),
        "image_features_squeezed": ref.image_features_squeezed,
        "mode": "eval() (no dropout anywhere; train/eval give the same values)",
        "output_max_abs_value": {k: float(ref.outputs[k].abs().max()) for k in FLOAT_OUTPUTS},
        "scalars": {k: float(ref.outputs[k]) for k in ("logit_scale", "loss_contrastive", "loss_caption", "loss")},
        "f32_vs_f64": noise,
        "saturation_checks": stats,
        "perturbation": _summarise_rules(rules),
        "notes": notes,
    }
    if spec.record_timings:
        # Only for throw-away fixtures: timings would make committed files differ run to run.
        meta["timings_s"] = timings
        meta["peak_rss_mib"] = peak_rss_mib()
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    meta["timings_s"], meta["peak_rss_mib"] = timings, peak_rss_mib()
    return meta


def _summarise_rules(rules: Dict[str, str]) -> Dict[str, List[str]]:
    """Group parameter names by rule, collapsing layer indices, to keep meta.json readable."""
    grouped: Dict[str, set] = {}
    for name, desc in rules.items():
        pattern = re.sub(r"\.\d+\.", ".*.", name)
        grouped.setdefault(desc, set()).add(pattern)
    return {desc: sorted(names) for desc, names in sorted(grouped.items())}


def dir_size(path: Path) -> int:
    """Total size in bytes of the files directly in `path`."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
