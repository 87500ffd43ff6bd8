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
