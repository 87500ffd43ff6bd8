"""The training loop: one plain loop for 1 CPU process, 1 GPU, or many processes under torchrun."""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .batches import training_data
from .checkpointer import Checkpointer
from .config import Config
from .distributed import Dist, setup, teardown, wrap
from .evaluation import evaluate, to_device
from .lora import apply_lora
from .metrics import Metrics
from .model import build_model, labelled_positions_loss, model_inputs, param_groups, unwrap
from .prefetch import Prefetcher
from .preflight import check_inputs, check_output_dir, clear_run
from .registry import Distillation, distillation_factory


def lr_lambda(cfg: Config):
    """Linear warmup over warmup_steps to lr, then cosine to lr * min_lr_ratio at max_steps."""
    warm, total, floor = cfg.optim.warmup_steps, cfg.train.max_steps, cfg.optim.min_lr_ratio

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


class Trainer:
    """resume: continue from the newest valid checkpoint in cfg.output_dir; overwrite: delete an earlier run there
    first. Without either, an output directory holding an earlier run is refused (gsa.train.preflight)."""

    def __init__(self, cfg: Config, resume: bool = False, overwrite: bool = False):
        self.cfg, self.resume, self.overwrite = cfg, resume, overwrite
        check_output_dir(cfg.output_dir, resume, overwrite)
        check_inputs(cfg)
        self.d: Dist = setup(cfg.train.device)
        self.out = Path(cfg.output_dir)
        self.bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and self.d.device.type == "cuda")
        self.log = print if self.d.is_main else (lambda *a, **k: None)
        data = training_data(cfg, self.d, self.log)
        self.batches = data.batches
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        plain = build_model(cfg.model, data.vocab_size, data.eos_id)
        self.distillation: Distillation | None = None
        if cfg.distill.teacher:
            if self.d.world > 1:
                raise NotImplementedError("distillation runs in one process for now (the teacher is not sharded)")
            self.distillation = distillation_factory()(cfg, self.d.device)
            self.distillation.prepare_student(plain, self._first_windows, self.log)
        if cfg.lora.rank:  # last: the adapters wrap the layers as prepared above
            apply_lora(plain, cfg.lora)
        self.num_params = sum(p.numel() for p in plain.parameters())
        self.model = wrap(plain, self.d, cfg.train.parallel, self.bf16, cfg.train.activation_checkpointing,
                          cfg.train.compile)
        o = cfg.optim
        # labelled_positions_loss bypasses the DDP/FSDP root and knows nothing of packed documents' cu_seqlens
        packed = cfg.data.kind == "text" and cfg.data.documents
        self.sparse_logits = cfg.train.sparse_logits and self.d.world == 1 and not packed
        if cfg.train.sparse_logits and not self.sparse_logits:
            self.log("train.sparse_logits needs one process and unpacked batches (data.documents = false or MQAR): "
                     "computing full logits")
        self.optimizer = torch.optim.AdamW(param_groups(self.model, o.weight_decay), lr=o.lr, betas=tuple(o.betas),
                                           eps=o.eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.step = 0
        self.checkpointer = Checkpointer(self.out, self.d, cfg.train.keep_checkpoints, data.tokenizer, cfg.data,
                                         cfg.lora.alpha / cfg.lora.rank if cfg.lora.rank else None)

    def _first_windows(self, n: int) -> torch.Tensor:
        """input_ids [n, T] of the first n training windows (step 0's order)."""
        return self.batches.train_batch(0, 0, 0, 1, n, 1)["input_ids"]

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one micro-batch: next-token cross-entropy, or the distillation loss of the stage."""
        if self.distillation is None:
            if self.sparse_logits:
                return labelled_positions_loss(self.model, batch)
            return self.model(**model_inputs(self.model, batch)).loss
        return self.distillation.loss(unwrap(self.model), batch)

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> Path | None:
        return self.checkpointer.save(self.model, self.optimizer, self.scheduler, self.step)

    def load(self, path: Path) -> None:
        self.step = self.checkpointer.load(path, self.model, self.optimizer, self.scheduler)

    def evaluate(self) -> dict[str, Any]:
        c = self.cfg
        return evaluate(self.model, self.batches, c.data.kind, c.train.eval_sequences, c.train.micro_batch_size,
                        self.d, self.bf16)

    # ---------------------------------------------------------------- the loop
    def _start_run(self) -> tuple[Path | None, Metrics | None]:
        """Prepare the output directory (cleared with overwrite), load the newest checkpoint with resume, open the
        metrics (main process). Returns (the checkpoint resumed from or None, the metrics or None)."""
        cfg, d, t = self.cfg, self.d, self.cfg.train
        if d.is_main:
            if self.overwrite:
                clear_run(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
            ckpt.clean_temporaries(self.out)
        d.barrier()
        resumed_from = None
        if self.resume:
            found = ckpt.latest_valid(self.out, d.world, log=self.log)
            if found is None:
                self.log(f"--resume: no checkpoint in {ckpt.checkpoint_root(self.out)}; starting from step 0")
            else:
                resumed_from = found[0]
                self.load(found[0])
                self.log(f"resumed from {found[0]} (step {self.step})")
        metrics = None
        if d.is_main:
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
            metrics = Metrics(self.out, self.step if resumed_from else None, t.tensorboard, t.wandb_project,
                              cfg.to_dict())
        return resumed_from, metrics

    def _optimizer_step(self, batches: Prefetcher, autocast) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """One optimizer step over grad_accum micro-batches (gradient sync on the last one only). Returns (the
        step's loss, a 0-d tensor on the device: no host sync; the gradient norm before clipping or None; the
        learning rate the step used)."""
        cfg, d, t = self.cfg, self.d, self.cfg.train
        is_fsdp = d.world > 1 and t.parallel == "fsdp"
        loss_sum = torch.zeros((), device=d.device)
        for micro in range(t.grad_accum):
            batch = to_device(next(batches), d.device)
            sync = micro == t.grad_accum - 1
            ctx = contextlib.nullcontext()
            if d.world > 1 and not is_fsdp and not sync:
                ctx = self.model.no_sync()
            if is_fsdp:
                self.model.set_requires_gradient_sync(sync)
            with ctx:
                with autocast:
                    loss = self._loss(batch) / t.grad_accum
                loss.backward()
            loss_sum += loss.detach()
        grad_norm = None
        if cfg.optim.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss_sum, grad_norm, lr

    def fit(self) -> dict[str, Any]:
        cfg, d, t = self.cfg, self.d, self.cfg.train
        resumed_from, metrics = self._start_run()
        self.log(f"model: {cfg.model['type']}, {self.num_params / 1e6:.2f}M parameters; {d.world} process(es) "
                 f"on {d.device.type}, {'bf16 autocast' if self.bf16 else 'float32'}; output {self.out}")
        from tqdm.auto import tqdm

        bar = tqdm(total=t.max_steps, initial=self.step, desc="train", unit="step",
                   disable=not (d.is_main and t.progress))
        tokens_per_step = t.micro_batch_size * t.grad_accum * d.world * cfg.data.seq_len
        autocast = torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        last_ckpt: Path | None = resumed_from
        tic, steps_since = time.perf_counter(), 0
        # the logged loss is the mean over the steps since the previous row, not the last step's batch: with a task
        # mix (MQAR's lengths and pair counts cycle by step) one step's loss is one task's, which read as spikes
        interval_loss = torch.zeros((), device=d.device)
        summary: dict[str, Any] = {}
        self.model.train()
        batches = Prefetcher(
            lambda key: self.batches.train_batch(key[0], key[1], d.rank, d.world, t.micro_batch_size, t.grad_accum),
            ((s, m) for s in range(self.step, t.max_steps) for m in range(t.grad_accum)),
            pin=d.device.type == "cuda",
        )
        started = time.monotonic()
        try:
            while self.step < t.max_steps:
                loss_sum, grad_norm, lr = self._optimizer_step(batches, autocast)
                interval_loss += loss_sum
                steps_since += 1
                bar.update(1)
                last = self.step == t.max_steps
                if t.time_limit_s > 0 and not last:
                    out_of_time = time.monotonic() - started >= t.time_limit_s
                    if d.world > 1:  # every process stops at the same step (one process needs no device sync)
                        out_of_time = bool(d.sum(torch.tensor(float(out_of_time), device=d.device)) > 0)
                    if out_of_time:
                        last = True
                        summary["stopped"] = f"time limit {t.time_limit_s:g} s at step {self.step}"
                        self.log(f"\ntime limit of {t.time_limit_s:g} s reached at step {self.step}")
                if self.step % t.log_every == 0 or last:
                    loss_val = float(d.mean(interval_loss)) / steps_since
                    interval_loss.zero_()
                    if not math.isfinite(loss_val):
                        raise FloatingPointError(f"loss is {loss_val} at step {self.step}")
                    elapsed = time.perf_counter() - tic
                    row = {"step": self.step, "loss": loss_val, "lr": lr,
                           "tokens_per_s": tokens_per_step * steps_since / max(elapsed, 1e-9)}
                    if grad_norm is not None:
                        row["grad_norm"] = float(grad_norm)
                    if d.device.type == "cuda":
                        row["peak_mem_gib"] = torch.cuda.max_memory_allocated(d.device) / 2**30
                    if metrics:
                        metrics.log(row)
                    bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr:.2e}")
                    tic, steps_since = time.perf_counter(), 0
                if (t.eval_every and self.step % t.eval_every == 0) or last:
                    ev = self.evaluate()
                    if ev and metrics:
                        metrics.log({"step": self.step, **ev})
                    if ev:
                        summary.update(ev)
                        bar.write(f"step {self.step}: " + ", ".join(f"{k} {format_value(v)}" for k, v in ev.items()))
                    tic = time.perf_counter()
                if (t.checkpoint_every and self.step % t.checkpoint_every == 0) or last:
                    last_ckpt = self.save() or last_ckpt
                    tic = time.perf_counter()
                if last:
                    break
        except KeyboardInterrupt:
            bar.close()
            self.log(f"\ninterrupted at step {self.step}; the last complete checkpoint is {last_ckpt} "
                     f"(continue with --resume)")
            raise
        finally:
            batches.close()
        bar.close()
        if metrics:
            metrics.close()
        final = self.checkpointer.publish(last_ckpt)
        summary.update({"step": self.step, "model_dir": str(final), "num_params": self.num_params,
                        "rank": d.rank})
        return summary


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {format_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def train(cfg: Config, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train as configured; return a summary (final step, last evaluation, model directory). resume, overwrite: what
    to do with an earlier run in cfg.output_dir (see Trainer)."""
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        teardown()
