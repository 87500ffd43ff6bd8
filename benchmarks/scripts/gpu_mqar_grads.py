"""Are the MQAR models' training gradients right on the GPU? (issue 4: ABC learns MQAR 10x faster per step than GSA)

At equal steps ABC + conv reaches 70% at 64 pairs (d = 128) and GSA + conv 0.6% (BENCHMARKS.md, session 17). The
op tests check the kernels against float64 at small shapes; this checks the whole training step at MQAR's shapes
(2 layers, d = 128, 4 heads of K = V = 32, 64 slots, 256 sequences of up to 256 tokens) and in the trainer's own
modes: for each model, the gradient of every parameter from

- `fp32`: float32 weights and activations, the Triton kernels (no autocast),
- `bf16`: float32 weights under bf16 autocast (what the trainer runs), eager,
- `bf16+compile`: the same with every block torch.compile'd (the MQAR configs' `train.compile = true`),

against float64 on the torch backend (`auto` picks it for float64), on the same weights and batch. Printed per
(model, training state, batch, mode): the loss difference, the largest relative gradient error over the parameter
tensors, ||g - g64|| / ||g64||, and the same for the slot-logit projection W_f alone, where a gate-gradient
defect would show. "trained" is the model after `--steps` AdamW steps of the length mix (bf16, eager), so that the
gates are where training takes them, not where they start.

    python benchmarks/scripts/gpu_mqar_grads.py [--steps 600] [--batch 64]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os

import torch

from gsa.data import mqar_batch
from gsa.train.config import load_config
from gsa.train.model import apply_compile, build_model, labelled_positions_loss, param_groups

VARIANTS = {
    "gsa-conv": ["model.use_short_conv=true"],
    "gsa-conv-ub6": ["model.use_short_conv=true", "model.gate_bias=true", "model.gate_bias_range=[6,6]"],
    "abc-conv": ["model.use_short_conv=true", 'model.forget_gate="none"'],
}
BATCHES = [(64, 4), (256, 16), (256, 64)]


def grads(model, batch, autocast: bool, dev: str = "cuda") -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
        loss = labelled_positions_loss(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.detach().double().clone() for n, p in model.named_parameters() if p.grad is not None}


def compare(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> dict[str, float]:
    rel = {n: ((got[n] - g).norm() / g.norm().clamp_min(1e-30)).item() for n, g in ref.items()}
    worst = max(rel, key=rel.get)
    f = [r for n, r in rel.items() if "f_proj" in n or "fused" in n]
    return {"max_rel": rel[worst], "worst": worst, "f_proj_rel": max(f) if f else float("nan"), "per_param": rel}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/mqar-gsa-d128.toml")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cuda", help="cpu: a smoke test of the script")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    args = p.parse_args()
    rows = []
    print("| model | state | seq, pairs | mode | loss - loss64 | max rel grad err (tensor) | W_f rel err |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.variants.split(","):
        cfg = load_config(args.config, VARIANTS[name])
        torch.manual_seed(0)
        model = build_model(cfg.model, cfg.data.mqar_vocab_size).to(args.device)
        for state in ("init", "trained"):
            if state == "trained":
                opt = torch.optim.AdamW(param_groups(model, cfg.optim.weight_decay), lr=cfg.optim.lr)
                mix = list(zip(cfg.data.mqar_train_seq_lens, cfg.data.mqar_train_pairs))
                for step, (T, D) in zip(range(args.steps), itertools.cycle(mix)):
                    b = {k: v.to(args.device) for k, v in mqar_batch(256, T, D, seed=[1, step]).items()}
                    with torch.autocast(args.device, dtype=torch.bfloat16):
                        loss = labelled_positions_loss(model, b)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                print(f"<!-- {name}: trained {args.steps} steps, last loss {loss.item():.3f} -->", flush=True)
            ref_model = copy.deepcopy(model).double()
            compiled = copy.deepcopy(model)
            apply_compile(compiled)
            for T, D in BATCHES:
                batch = {k: v.to(args.device) for k, v in mqar_batch(args.batch, T, D, seed=[2, T, D]).items()}
                l64, g64 = grads(ref_model, batch, False, args.device)
                for mode, m, ac in (("fp32", model, False), ("bf16", model, True), ("bf16+compile", compiled, True)):
                    loss, g = grads(m, batch, ac, args.device)
                    c = compare(g64, g)
                    rows.append({"model": name, "state": state, "seq": T, "pairs": D, "mode": mode,
                                 "loss": loss, "loss64": l64, **c})
                    print(f"| {name} | {state} | {T}, {D} | {mode} | {loss - l64:+.2e} | {c['max_rel']:.2e} "
                          f"({c['worst']}) | {c['f_proj_rel']:.2e} |", flush=True)
            model.zero_grad(set_to_none=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "mqar_grads.json"), "w") as fh:
        json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
