"""`gsa bench train` and `gsa bench decode` run end to end at toy sizes and write valid JSON and a PNG."""

import json

from gsa.cli import main


def _check(path, n_rows, keys):
    data = json.loads(path.read_text())
    assert len(data["rows"]) == n_rows
    for row in data["rows"]:
        assert "error" not in row, row
        for key in keys:
            assert row[key] > 0, (key, row)
    png = path.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return data


def test_bench_train_toy(tmp_path):
    out = tmp_path / "train.json"
    assert main(["bench", "train", "--size", "tiny", "--variants", "llama,gsa,gsa-keep-states", "--seq-lens",
                 "32,64", "--tokens", "64", "--steps", "1", "--warmup", "0", "--out", str(out)]) == 0
    data = _check(out, 6, ["tokens_per_s", "step_ms", "params"])
    assert {r["B"] for r in data["rows"] if r["T"] == 32} == {2}


def test_bench_decode_toy(tmp_path):
    out = tmp_path / "decode.json"
    assert main(["bench", "decode", "--size", "tiny", "--prefixes", "16,40", "--batches", "1,2", "--new-tokens", "3",
                 "--no-compile", "--out", str(out)]) == 0
    data = _check(out, 8, ["ms_per_token", "ttft_ms", "state_bytes_per_seq"])
    gsa_state = {r["state_bytes_per_seq"] for r in data["rows"] if r["model"] == "gsa"}
    assert len(gsa_state) == 1  # constant in the prefix length
    kv = [r["state_bytes_per_seq"] for r in data["rows"] if r["model"] == "llama" and r["batch"] == 1]
    assert kv[1] > kv[0]  # the KV cache grows with the prefix


def test_bench_decode_merges_runs(tmp_path):
    """--merge joins runs made one model at a time (so a time-out keeps the other) into one JSON and plot."""
    paths = []
    for model in ("gsa", "llama"):
        paths.append(tmp_path / f"{model}.json")
        assert main(["bench", "decode", "--size", "tiny", "--models", model, "--prefixes", "16", "--batches", "1",
                     "--new-tokens", "2", "--no-compile", "--out", str(paths[-1])]) == 0
    out = tmp_path / "both.json"
    assert main(["bench", "decode", "--merge", ",".join(map(str, paths)), "--out", str(out)]) == 0
    data = _check(out, 2, ["ms_per_token"])
    assert [r["model"] for r in data["rows"]] == ["gsa", "llama"] and len(data["merged_from"]) == 2


def test_llama_fused_variant_computes_the_same_loss(monkeypatch):
    """'llama-fused' routes a Llama's norms and SwiGLU through gsa's kernels (forced on: the interpreter on a CPU):
    same weights, same loss and gradients as the plain Llama, to float32 rounding."""
    import torch

    import gsa.nn.backend as backend
    from gsa.bench.train import build

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    plain = build("llama", "tiny", 32, device, torch.float32)
    fused = build("llama-fused", "tiny", 32, device, torch.float32)
    fused.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 256, (2, 32), device=device)
    monkeypatch.setattr(backend, "KERNELS", "triton")
    losses, grads = [], []
    for m in (plain, fused):
        loss = m(ids, labels=ids).loss
        loss.backward()
        losses.append(loss.item())
        grads.append(m.model.layers[0].mlp.gate_proj.weight.grad.clone())
    assert abs(losses[0] - losses[1]) < 1e-5, losses
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
