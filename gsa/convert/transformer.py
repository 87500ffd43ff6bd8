"""Transformer -> GSA conversion (T2R): a Llama-family checkpoint becomes a `GSAForCausalLM`.

What is carried over, bitwise (same dtype, `copy_`): the token embedding, every layer's q/k/v/o projections (and
Qwen2's q/k/v biases), the SwiGLU MLP (gate/up/down), both RMSNorm gains of every block, the final RMSNorm and the
LM head (or the tie). The block structure is the same (pre-norm attention and MLP with residuals, final norm), so
only the token mixer changes: softmax attention over all past tokens becomes Gated Slot Attention over M slots.

What is new, and why it is set up the way it is:

- `f_proj` ([H * M, d], one row per kv head and slot) is the only new weight. It sets the log forget gate
  g = logsigmoid(W_f x) / tau and, through s = 1 - exp(g), how much each token is written into each slot.
  It must not start at zero: every slot would then see the same gate and the same writes, hold the same contents,
  receive the same gradient, and never specialise. `init="normal"` (default) draws N(0, init_std^2) entries,
  with init_std = 0.02 as in the paper / fla for every linear layer of a GSA trained from scratch. Inputs are the
  teacher's RMS-normalised hidden states, so the gate logits start as small zero-mean noise (std about
  0.02 * sqrt(d) * RMS of the input: ~0.5 at d = 576) around f = 0, where alpha = 0.5 ** (1 / tau): the initial
  forget rate is chosen with tau (`gate_logit_normalizer`, default 8: alpha ~ 0.917, a memory of ~12 tokens;
  tau = 16 gives ~0.958). `init="keys"` instead makes each slot's gate logit a random direction in the teacher's
  *key* space of its kv head (W_f[h] = R_h W_k[h], rows rescaled to the norm a N(0, init_std^2) row has), so
  tokens are routed to slots by what the teacher already uses to route attention; it is an experiment to compare
  in the finetuning runs, not a tested improvement.
- Feature maps (`feature_map`, default "identity"): q, k and v are used exactly as the teacher projects them.
  The GSA read is p = softmax(scale * q Hk) over slots, o = p Hv; with one slot per token and no forgetting that is
  the teacher's softmax attention (without RoPE), so identity maps keep the teacher's query/key geometry and its
  value space. The paper's layer applies swish to q, k and v ("swish" reproduces it, e.g. for the paper's
  full-finetune recipe); swish on v would also distort every value the teacher's o_proj expects. "learned" adds a
  per-head map on q and on k (gsa.nn.feature_map.LearnedFeatureMap) that starts as the identity, so the student
  starts as the identity-map one, and is fitted to the teacher's attention weights afterwards
  (gsa.convert.attention_weights, the Hedgehog objective).
- Output norm (`use_output_norm`, default False): the GSA layer normally computes W_o RMSNorm(swish(o)). A
  Transformer computes W_o o, and o is a convex mix of values in both cases (slot contents are EMA-like averages
  of values, since the write weights s = 1 - alpha sum to ~1 along a slot's history), so the teacher's o_proj
  expects o at the value scale: adding a swish + unit-gain RMSNorm would rescale every layer's output.
- Scale: q . k keeps the teacher's head_dim ** -0.5 (GSAConfig.attn_scale None = K ** -0.5 with K = head_dim).
- RoPE is dropped: GSA has no positional encoding (order comes from the gates). The teacher's q/k were trained
  with rotations; without them q . k is the rotation-free (relative position 0) score. HF's per-head q/k row
  permutation for rotate_half is applied to both q and k, so dot products are unaffected by it. Finetuning must
  recover what positions gave; this is the main loss of information at conversion time.
- Qwen2's q/k/v biases are carried as GSA `qkv_bias` (a bias added before the feature map, as in the teacher).
- Hybrid students (`window_size` W > 0, `num_sink_tokens` S): each layer also keeps the teacher's own softmax
  attention, with its RoPE (`rope_theta` carried over), over the W most recent and the S first tokens, and mixes in
  the slot read with a per-head weight `memory_scale` that starts at zero (gsa.nn.window). The converted model then
  starts as exactly the training-free sliding-window baseline (gsa.convert.baselines; tested), rather than as a
  GSA model that must relearn local attention from rotation-free scores, and finetuning teaches the slots what
  the window no longer sees (the LoLCATs / Liger recipe of a linear memory beside a sliding window).

Which teachers convert, and the student's GSAConfig: gsa/convert/transformer_config.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from gsa.convert.transformer_config import UnsupportedModelError, check_supported, gsa_config_from, rename
from gsa.models import GSAForCausalLM

INITS = ("normal", "keys")

# teacher state-dict key -> student key (regex substitution); every teacher tensor must match exactly one rule.
_RULES = [
    (r"^model\.embed_tokens\.weight$", r"model.embed_tokens.weight"),
    (r"^model\.norm\.weight$", r"model.norm.weight"),
    (r"^lm_head\.weight$", r"lm_head.weight"),
    (r"^model\.layers\.(\d+)\.self_attn\.([qkvo])_proj\.(weight|bias)$", r"model.layers.\1.attn.\2_proj.\3"),
    (r"^model\.layers\.(\d+)\.mlp\.(gate|up|down)_proj\.weight$", r"model.layers.\1.mlp.\2_proj.weight"),
    (r"^model\.layers\.(\d+)\.input_layernorm\.weight$", r"model.layers.\1.attn_norm.weight"),
    (r"^model\.layers\.(\d+)\.post_attention_layernorm\.weight$", r"model.layers.\1.mlp_norm.weight"),
]


def weight_map(teacher_keys) -> dict[str, str]:
    """teacher state-dict key -> student key, for every key; raises naming the first key no rule covers."""
    return {key: rename(key, _RULES, "cannot convert: no GSA parameter for the teacher tensor {name!r}")
            for key in teacher_keys}


def _init_new_weights(student: GSAForCausalLM, init: str, init_std: float, seed: int) -> None:
    """Fill every layer's f_proj ([H * M, d]) in float32 from a seeded generator, then cast to its dtype; with
    feature_map "learned" also the q / k maps, as identity maps (LearnedFeatureMap.reset_parameters)."""
    cfg = student.config
    H, M, K, d = cfg.num_kv_heads, cfg.num_slots, cfg.head_k_dim, cfg.hidden_size
    gen = torch.Generator().manual_seed(seed)
    for block in student.model.layers:
        if init == "normal":
            w = torch.randn(H * M, d, generator=gen) * init_std
        else:  # "keys": random directions in each kv head's key space
            wk = block.attn.k_proj.weight.detach().float().view(H, K, d)
            r = torch.randn(H, M, K, generator=gen)
            w = torch.einsum("hmk,hkd->hmd", r, wk).reshape(H * M, d)
            w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12) * (init_std * d**0.5)
        block.attn.f_proj.weight.data.copy_(w.to(block.attn.f_proj.weight.dtype))
    for block in student.model.layers if cfg.feature_map == "learned" else ():  # after f_proj: same f_proj as
        block.attn.q_map.reset_parameters(gen)  # the identity-map student of this seed
        block.attn.k_map.reset_parameters(gen)


def _load_teacher(src, gguf_file: str | None, dtype: torch.dtype | None):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(src, gguf_file=gguf_file)
    check_supported(config)  # before reading any weights
    if dtype is None:
        dtype = torch.float32 if gguf_file is not None else "auto"  # GGUF weights are dequantised to float32
    return AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=dtype)


def from_pretrained_transformer(
    src: str | os.PathLike | nn.Module,
    *,
    num_slots: int = 64,
    init: str = "normal",
    init_std: float = 0.02,
    gate_logit_normalizer: float = 8.0,
    feature_map: str = "identity",
    use_output_norm: bool = False,
    window_size: int = 0,
    num_sink_tokens: int = 0,
    gate_bias: bool = False,
    gguf_file: str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> GSAForCausalLM:
    """A GSAForCausalLM made from a Llama / Mistral / Qwen2 causal LM (see the module docstring for the choices).

    src: a local checkpoint directory (or hub-style path transformers can load offline), or an already loaded
        LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM.
    gguf_file: the name of a GGUF file inside `src` (transformers dequantises it; needs the `gguf` package).
    dtype: the student's dtype; None keeps the teacher's (a GGUF teacher loads as float32). Carried tensors are
        copied bitwise when the dtypes agree.
    num_slots, gate_logit_normalizer, feature_map, use_output_norm: the GSA layer's M, tau and the two options
        conversion needs (defaults: 64, 8, "identity", False). init / init_std / seed: how f_proj starts.
    window_size, num_sink_tokens: > 0 makes a hybrid student that keeps the teacher's attention (with RoPE) over
        that many recent / first tokens beside the slots (see the module docstring); 0 (default): plain GSA.
    gate_bias: f_proj gets a bias spread over each head's slots (GSAConfig.gate_bias: initial memories of ~2 to
        ~440 tokens instead of ~12 each); off by default.
    Returns the student in eval mode, on the CPU.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std}")
    if isinstance(src, nn.Module) and gguf_file is not None:
        raise ValueError("gguf_file applies to a path, not to an already loaded model")
    teacher = src if isinstance(src, nn.Module) else _load_teacher(src, gguf_file, dtype)
    config = gsa_config_from(
        teacher.config, num_slots=num_slots, gate_logit_normalizer=gate_logit_normalizer,
        feature_map=feature_map, use_output_norm=use_output_norm, window_size=window_size,
        num_sink_tokens=num_sink_tokens, gate_bias=gate_bias,
    )
    state = teacher.state_dict()
    mapping = weight_map(state)
    dtype = dtype or next(iter(state.values())).dtype

    # Build on the meta device (no random init of weights about to be overwritten), then allocate and fill.
    with torch.device("meta"):
        student = GSAForCausalLM(config)
    student = student.to_empty(device="cpu").to(dtype)
    student.tie_weights()
    params = dict(student.named_parameters(remove_duplicate=False))
    filled = set()
    with torch.no_grad():
        for key, target in mapping.items():
            if target not in params:
                raise UnsupportedModelError(f"cannot convert: the teacher tensor {key!r} has no GSA target {target!r}")
            p, t = params[target], state[key]
            if p.shape != t.shape:
                raise UnsupportedModelError(f"cannot convert: {key} is {tuple(t.shape)}, {target} is {tuple(p.shape)}")
            p.copy_(t.to(p.dtype))
            filled.add(target)
        _init_new_weights(student, init, init_std, seed)
        for i, block in enumerate(student.model.layers):
            filled.add(f"model.layers.{i}.attn.f_proj.weight")
            if config.feature_map == "learned":
                filled.update(f"model.layers.{i}.attn.{m}.{w}" for m in ("q_map", "k_map") for w in ("w1", "b1", "w2"))
            if config.gate_bias:
                block.attn.f_proj.bias.copy_(block.attn.f_proj.spread_bias())
                filled.add(f"model.layers.{i}.attn.f_proj.bias")
            if config.use_output_norm:
                block.attn.o_norm.weight.fill_(1.0)
                filled.add(f"model.layers.{i}.attn.o_norm.weight")
            if config.window_size:
                block.attn.memory_scale.zero_()  # starts as the teacher's windowed attention alone
                filled.add(f"model.layers.{i}.attn.memory_scale")
    if config.tie_word_embeddings:
        filled.add("lm_head.weight")
    missing = sorted(set(params) - filled)
    if missing:
        raise UnsupportedModelError(f"cannot convert: the teacher has no tensor for {missing[:4]} ...")
    return student.eval()


def convert(src: str | os.PathLike, dst: str | os.PathLike, *, gguf_file: str | None = None, **options) -> Path:
    """from_pretrained_transformer(src, ...) saved with save_pretrained into dst, with the source's tokenizer if it
    has one (always for GGUF, which holds its tokenizer). options: as for from_pretrained_transformer. Returns dst.
    """
    src, dst = Path(src), Path(dst)
    student = from_pretrained_transformer(src, gguf_file=gguf_file, **options)
    dst.mkdir(parents=True, exist_ok=True)
    student.save_pretrained(dst)
    has_tokenizer = gguf_file is not None or any(
        (src / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    )
    if has_tokenizer:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(src, gguf_file=gguf_file).save_pretrained(dst)
    return dst
