"""The op on the Triton kernels under chosen launch options, with the chosen kernels' launches recorded: what the
launch-option tests (slot tiles, D tiles a program, kv-head programs) share. Import it after
`pytest.importorskip("triton")`."""

import torch

from gsa.ops import gated_slot_attention
from gsa.ops.triton import SETTINGS, chunk_gsa
from op_inputs import cast, cpu, on, run

SCALE = 0.3  # chunk_op's scale: a reference compared with it takes the same (scale=SCALE)


def chunk_op(q, k, v, s, g, *, initial_state=None, output_final_state=False, cu_seqlens=None, slot_read="softmax"):
    return chunk_gsa(q, k, v, s, g, SCALE, initial_state, output_final_state, cu_seqlens, False,
                     slot_read == "linear")


def torch_op(*args, **kwargs):
    """The torch backend at chunk_op's scale: the baseline a GPU accuracy test holds chunk_op to."""
    return gated_slot_attention(*args, scale=SCALE, backend="torch", **kwargs)


KERNEL_A_NAMES = ("a", "a-small", "dp", "dp-small")  # kernel_a's launch names (forward and backward, D > / <= 128)


def kernel_a_entries(**options):
    """SETTINGS.launch with `options` added to the entries of kernel_a's four names and of their "@gqa" entries
    (which set GROUP and WHOLE by default, so an option must be set there too to hold for grouped heads), the
    entries' other options kept."""
    names = KERNEL_A_NAMES + tuple(n + "@gqa" for n in KERNEL_A_NAMES)
    return {**SETTINGS.launch, **{n: {**SETTINGS.launch.get(n, {}), **options} for n in names}}


def recorded_run(x, monkeypatch, modules, fields, launch=None, **kw):
    """run(chunk_op, ...) on float32 copies of x with SETTINGS.launch = `launch` (None: as it is), and, for each
    launch made through the `launch` of one of `modules` (the kernels' modules), the tuple of `fields`: launch
    keywords, "grid", or "kernel" (the kernel's name)."""
    launches = []
    for module in modules:
        real = module.launch

        def record(kernel, grid, real=real):
            go = real(kernel, grid)
            seen = {"grid": grid, "kernel": kernel.__name__}
            return lambda *a, **k: launches.append(tuple({**k, **seen}[f] for f in fields)) or go(*a, **k)

        monkeypatch.setattr(module, "launch", record)
    forced = {} if launch is None else {"launch": launch}
    # prewarm off: on CUDA a configuration's first call queues every launch for compilation first (recorded too)
    with SETTINGS.override(prewarm=False, **forced):
        return cpu(run(chunk_op, on(cast(x, torch.float32)), **kw)), launches
