"""`import gsa` works, and the CPU path runs, on a machine without triton (our code imports it only on use)."""

import subprocess
import sys

CODE = r"""
import sys
sys.modules["triton"] = None  # any `import triton` now raises ImportError, as on a machine without it
import torch, gsa
from gsa.ops.api import resolve_backend
assert resolve_backend("auto", torch.device("cpu")) == "torch"
q = torch.randn(1, 70, 2, 8); k = torch.randn(1, 70, 2, 8); v = torch.randn(1, 70, 2, 8)
g = -torch.rand(1, 70, 2, 4); s = 1 - g.exp()
o, _ = gsa.gated_slot_attention(q, k, v, s, g)
model = gsa.GSAForCausalLM(gsa.GSAConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_heads=2))
print(model(torch.randint(0, 50, (1, 9))).logits.shape, o.shape)
"""


def test_import_and_cpu_path_without_triton():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([1, 9, 50]) torch.Size([1, 70, 2, 8])" in out.stdout
