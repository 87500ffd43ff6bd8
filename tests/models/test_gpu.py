"""The model on a CUDA device (the triton backend), against the CPU model. Skipped without CUDA.

Truth is the float64 CPU model (torch backend). The GPU float32 model may differ from it by more than the CPU
float32 model does (TF32-free triton dots still sum in another order, the chunked kernels use sub-block decays),
so its error is bounded by a small multiple of the CPU float32 error, plus the float32 resolution of the logits.
Passed on an H100 with torch 2.11, transformers 5.17, triton 3.6.
"""

import pytest
import torch

from conftest import left_pad
from gsa.models import GSACache

pytestmark = pytest.mark.gpu


def _errors(make_model, **overrides):
    model = make_model(**overrides)
    seqs = [torch.randint(3, 101, (n,)) for n in (150, 37, 1)]  # > 2 chunks of 64, and a single token
    ids, mask = left_pad(seqs)
    with torch.no_grad():
        truth = model(ids, attention_mask=mask).logits
        cpu32 = model.float()(ids, attention_mask=mask).logits
        gpu = model.cuda()(ids.cuda(), attention_mask=mask.cuda()).logits.cpu()
    real = mask.bool()
    return (cpu32.double() - truth)[real].abs().max().item(), (gpu.double() - truth)[real].abs().max().item()


@pytest.mark.parametrize("use_short_conv", [False, True])
def test_gpu_forward_matches_cpu(make_model, use_short_conv):
    err_cpu, err_gpu = _errors(make_model, use_short_conv=use_short_conv)
    print(f"max |logit error| vs float64: cpu float32 {err_cpu:.2e}, gpu float32 {err_gpu:.2e}")
    assert err_gpu <= 4 * err_cpu + 1e-6  # seen on an H100: 1.33e-07 vs 1.28e-07, 1.88e-07 vs 1.50e-07


def test_gpu_prefill_decode_and_generate(make_model):
    model = make_model(dtype=torch.float32).cuda()
    seqs = [torch.randint(3, 101, (n,)) for n in (70, 9, 33)]
    ids, mask = left_pad(seqs)
    ids, mask = ids.cuda(), mask.cuda()
    with torch.no_grad():
        out = model(ids[:, :-3], attention_mask=mask[:, :-3], use_cache=True)
        steps = [out.logits]
        for t in range(ids.shape[1] - 3, ids.shape[1]):
            steps.append(model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1],
                               past_key_values=out.past_key_values).logits)
        full = model(ids, attention_mask=mask).logits
    real = mask.bool()
    err = (torch.cat(steps, 1) - full)[real].abs().max().item()
    print(f"gpu decode vs full forward: {err:.2e}")
    assert err < 1e-4  # both float32 on logits of size O(0.1): ~100x the float32 resolution
    kw = dict(attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0, eos_token_id=None)
    cached = model.generate(ids, **kw)
    assert torch.equal(cached, model.generate(ids, use_cache=False, **kw))
    # The in-place decode path (the fused recurrent kernel advancing the cache's buffers) picks the same tokens.
    assert torch.equal(cached, model.generate(ids, past_key_values=GSACache(2, inplace_decode=True), **kw))


def test_gpu_bf16_packed_training_step(make_model):
    model = make_model(dtype=torch.float32).cuda().train()
    ids = torch.randint(3, 101, (1, 300), device="cuda")
    cu = torch.tensor([0, 100, 101, 230, 300], device="cuda", dtype=torch.int32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, labels=ids, cu_seqlens=cu)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
