"""Fast decoding for GSAForCausalLM: a fixed-shape, allocation-free step over owned state buffers.

GSA decodes as an RNN: a token costs the same whatever the context, so decoding is bound by reading the weights
once per step. What stands between that floor and eager PyTorch is launch overhead (hundreds of small kernels a
token), host synchronisation and allocation. `StaticDecoder` removes all three:

- the per-layer float32 states (and short-convolution windows) live in buffers allocated once, advanced in place
  through `GSACache(inplace_decode=True)` and the op's `inplace_state` path (the fused recurrent Triton kernel on
  CUDA);
- the step has fixed shapes, so it can be compiled (`torch.compile(fullgraph=True)`) and captured in a CUDA graph
  (`cuda_graph=True`): one replay per token;
- sampling (greedy, temperature, top-k, top-p) runs on the device with no `.item()`; the end-of-sequence check
  reads the device only every `stop_check_every` tokens.

Prefill uses the model's ordinary (chunked) forward with a GSACache, then copies the states into the buffers.
"""

from __future__ import annotations

import numbers

import torch

from gsa.models.cache import GSACache
from gsa.nn.options import check_int, check_positive


def sample_next(logits: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits: [B, vocab] -> next token ids [B] (int64), on the device, without host synchronisation.

    Greedy is argmax. Sampling draws from softmax(logits / temperature) restricted to the top_k tokens and to the
    smallest set whose mass reaches top_p, by the exponential race: argmax(p / E) with E ~ Exp(1) i.i.d. is a draw
    from p, and needs neither a cumulative sum over the vocabulary nor a sync.
    """
    if not do_sample:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        outside = probs.cumsum(dim=-1) - probs > top_p  # the mass before this token already reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(outside, float("-inf")))
    probs = torch.softmax(logits, dim=-1)
    race = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / race).argmax(dim=-1)


def check_sampling(do_sample: bool, temperature, top_k, top_p) -> None:
    """A ValueError naming the sampling argument that sample_next cannot use: temperature must be positive and
    finite, top_k None or an int >= 1, top_p None or a number in (0, 1] (checked when do_sample only)."""
    if not do_sample:
        return
    check_positive("temperature", temperature)
    if top_k is not None:
        check_int("top_k", top_k)
    if top_p is not None and not (isinstance(top_p, numbers.Real) and not isinstance(top_p, bool) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] (or None), got {top_p!r}")


def _compile_options(compile: bool | str, device: torch.device) -> dict:
    """Inductor options for the step: those of the torch.compile mode named (none for True), plus programmatic
    dependent launch of inductor's own kernels where ours use it (`gsa.ops.triton.SETTINGS.pdl`): each of a step's
    small norm and element-wise kernels may then start while the kernel before it drains."""
    import torch._inductor.config

    from gsa.ops.triton.launch import use_pdl

    options = dict(torch._inductor.list_mode_options(compile)) if isinstance(compile, str) else {}
    if use_pdl(device) and hasattr(torch._inductor.config.triton, "enable_pdl"):
        options["triton.enable_pdl"] = True
    return options


class StaticDecoder:
    """Decode `batch_size` sequences of a GSAForCausalLM with a fixed-shape step.

    Args:
        model: a GSAForCausalLM in eval mode (float32, bf16 or fp16; its device is used).
        batch_size: B, fixed for the decoder's life (the state buffers are [B, ...]).
        compile: torch.compile the step (fullgraph=True): fuses the small element-wise ops of a token. Or a
            torch.compile mode: "max-autotune-no-cudagraphs" also times Triton templates against cuBLAS for the
            step's matrix-vector products (slower first call; the graph capture is cuda_graph's).
        cuda_graph: capture the step in a CUDA graph on its first call (CUDA only): one replay per token.
        max_prefill_tokens: a prefill of B prompts of T tokens runs in pieces of max(1, max_prefill_tokens // B)
            positions, each continuing the state of the last, so its activation memory is bounded whatever B x T
            (a 32 x 32K prefill of GSA-1.3B in one piece needs ~45 GB of activations). Packed prompts run whole.
        fuse: compute each layer's q/k/v/slot-logit and gate/up projections as one matrix product each
            (`model.fuse_projections()`: no extra memory; the model computes the same outputs, whoever calls it).

    Use `generate(input_ids, attention_mask, max_new_tokens, ...)`, or `prefill` then `step` yourself. The states
    live in one `GSACache(inplace_decode=True)` owned by the decoder: the first prefill adopts the states it
    produces, later prefills copy into them, and every step advances them in place, so a captured graph stays
    valid across prompts. State per sequence: L * H * M * (K + V) float32 values, whatever the context length.
    """

    def __init__(self, model, batch_size: int, *, compile: bool | str = False, cuda_graph: bool = False,
                 fuse: bool = True, max_prefill_tokens: int = 65536):
        device = model.lm_head.weight.device
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, got {device}")
        if model.lm_head.weight.dtype == torch.float64:
            raise ValueError("StaticDecoder keeps float32 states; a float64 model decodes with generate()")
        batch_size = check_int("batch_size", batch_size)
        self.max_prefill_tokens = check_int("max_prefill_tokens", max_prefill_tokens)
        if fuse:
            model.fuse_projections()
        self.model = model
        self.batch_size = batch_size
        self.cuda_graph = cuda_graph
        self.cache: GSACache | None = None
        self._token = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._step_fn = torch.compile(self._step_impl, fullgraph=True, options=_compile_options(compile, device)) \
            if compile else self._step_impl
        self._graph = None
        self._logits = None

    @property
    def state_bytes(self) -> int:
        """Bytes of recurrent state (and convolution windows) for the whole batch; 0 before the first prefill."""
        if self.cache is None:
            return 0
        return sum(t.numel() * t.element_size() for i in range(len(self.cache.layers))
                   for t in self.cache.state(i).tensors())

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """Run the prompts and load the states: input_ids [B, T] (left padding in attention_mask), or B prompts
        of any lengths packed into input_ids [1, total] with cu_seqlens [B + 1] (no padding at all).

        Returns the logits of each prompt's last position [B, vocab] in float32.
        """
        if cu_seqlens is not None:
            if input_ids.ndim != 2 or input_ids.shape[0] != 1 or cu_seqlens.numel() != self.batch_size + 1:
                raise ValueError(f"packed prompts: input_ids [1, total] and cu_seqlens of {self.batch_size + 1} "
                                 f"offsets, got {tuple(input_ids.shape)} and {tuple(cu_seqlens.shape)}")
            out = self.model(input_ids, cu_seqlens=cu_seqlens, use_cache=True)
            last = out.logits[0, cu_seqlens[1:].to(input_ids.device) - 1]  # [B, vocab]
        else:
            if input_ids.ndim != 2 or input_ids.shape[0] != self.batch_size:
                raise ValueError(f"input_ids must be [{self.batch_size}, T], got {tuple(input_ids.shape)}")
            if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(f"attention_mask must be {tuple(input_ids.shape)}, got {tuple(attention_mask.shape)}")
            piece = max(1, self.max_prefill_tokens // self.batch_size)
            out = None
            for start in range(0, input_ids.shape[1], piece):
                end = start + piece
                out = self.model(input_ids[:, start:end], use_cache=True, logits_to_keep=1,
                                 attention_mask=None if attention_mask is None else attention_mask[:, start:end],
                                 past_key_values=None if out is None else out.past_key_values)
            last = out.logits[:, -1]
        fresh = out.past_key_values
        if self.cache is None:
            self.cache = GSACache(len(fresh.layers), inplace_decode=True)
            for i in range(len(fresh.layers)):
                self.cache.update_state(i, fresh.state(i).map(lambda x: x.contiguous()), input_ids.shape[1])
        else:
            for i in range(len(fresh.layers)):
                for dst, src in zip(self.cache.state(i).tensors(), fresh.state(i).tensors()):
                    dst.copy_(src)
        return last.float()

    def _step_impl(self, token: torch.Tensor) -> torch.Tensor:
        out = self.model(token[:, None], past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].float()

    @torch.no_grad()
    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Advance every sequence by one token (token [B] int64); returns the next logits [B, vocab] float32.

        With cuda_graph=True the returned tensor is the graph's static output: the next step overwrites it. The
        cache's per-layer token counts are not advanced by graph replays (they are host-side bookkeeping).
        """
        if self.cache is None:
            raise RuntimeError("StaticDecoder.step needs a prefill first")
        if not self.cuda_graph:
            return self._step_fn(token)
        self._token.copy_(token)
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._logits

    def _capture(self) -> None:
        # Warm up on a side stream (compilation, autotuning, lazy allocations), then capture. Warm-up steps advance
        # the states, so they are saved and restored around it.
        saved = [tuple(t.clone() for t in self.cache.state(i).tensors()) for i in range(len(self.cache.layers))]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step_fn(self._token)
        torch.cuda.current_stream().wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph):
            self._logits = self._step_fn(self._token)
        for i, old in enumerate(saved):
            for dst, src in zip(self.cache.state(i).tensors(), old):
                dst.copy_(src)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, eos_token_id: int | list[int] | None = None, pad_token_id: int = 0,
                 generator: torch.Generator | None = None, stop_check_every: int = 16,
                 cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, T] (left-padded, with attention_mask) -> [B, T + n] with n <= max_new_tokens new tokens.
        Packed prompts (input_ids [1, total] with cu_seqlens [B + 1]) -> the new tokens only, [B, n].

        After a sequence emits an end-of-sequence token it is continued with pad_token_id. Generation stops early
        once every sequence has ended (checked every `stop_check_every` tokens: the only host synchronisation).
        """
        max_new_tokens = check_int("max_new_tokens", max_new_tokens)
        stop_check_every = check_int("stop_check_every", stop_check_every)
        check_sampling(do_sample, temperature, top_k, top_p)
        logits = self.prefill(input_ids, attention_mask, cu_seqlens)
        B = self.batch_size
        out = torch.full((B, max_new_tokens), pad_token_id, dtype=torch.long, device=input_ids.device)
        eos = None
        if eos_token_id is not None:
            eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id),
                               device=input_ids.device)
        finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        n = max_new_tokens
        for i in range(max_new_tokens):
            token = sample_next(logits, do_sample, temperature, top_k, top_p, generator)
            if eos is not None:
                token = torch.where(finished, torch.full_like(token, pad_token_id), token)
                finished = finished | torch.isin(token, eos)
            out[:, i] = token
            if eos is not None and (i + 1) % stop_check_every == 0 and bool(finished.all()):
                n = i + 1
                break
            if i + 1 < max_new_tokens:
                logits = self.step(token)
        return out[:, :n] if cu_seqlens is not None else torch.cat([input_ids, out[:, :n]], dim=1)
