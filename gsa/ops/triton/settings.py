"""Every run-time switch of the Triton kernels, in one object: `SETTINGS`.

The launchers read it at call time, so a benchmark or a test can change a field (or several, for a block, with
`SETTINGS.override(...)`) and the next call uses it; a changed field that alters the compiled kernels also changes the
first-call warm pass's key (`launch_key`). The defaults are what every figure on the results page (BENCHMARKS.md,
"Kernels") was measured with; docs/log.md, "Kernels" has the measurements behind each choice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from collections.abc import Mapping
from dataclasses import dataclass, field

# Launch options of single kernels, by the name of their launch_options() call: "cumsum", "h", "a", "o", "dp", "dh",
# "dx", "ds", "dg"; "h-narrow" / "dh-narrow" (the state walks at 16-wide D tiles), "h-carry" / "dh-carry" (the
# segmented walks' carry kernels), "a-small" / "dp-small" (kernel_a at D <= 128). Besides num_warps and num_stages:
#   BD     ("o", "dx") the D tile;
#   BM     ("ds" and the six state-kernel names) the slot tile, a power of two >= 16 (default: M up to 64 a tile;
#          {"BM": 128} takes M = 128 as one tile; chunk_h.py, "Slot tiles");
#   ND     ("o", "dx") D tiles a program walks, sharing what does not depend on D (0: from the shape,
#          launch.d_tiles_per_program);
#   RB     ("o", "dx"; kernel_a's four names with WHOLE) rows of a chunk a program takes (0: the whole chunk;
#          chunks.row_block; "dx" in row blocks is not timed yet);
#   WHOLE  (kernel_a's four names, "ds") a program a chunk instead of a 16-row sub-block (docs/algorithm.md,
#          "Chunked algorithm");
#   GROUP  (kernel_a's four names) a program a kv head for all its query heads, which share its loads;
#   SPLIT  ("h", "h-narrow", "dh", "dh-narrow") the chunks that end inside their sequence stepped without masks;
#   FUSED  ("ds") both of a pass's products from one D loop (one query head a kv head only; dropped for groups).
# An entry replaces the name's defaults wholesale ({"a-small": {"GROUP": True}} also drops its WHOLE). On top of a
# name's entry, name + "@gqa" applies where a kv head has several query heads, then name + "@m128" above 64 slots
# (launch.WIDE_SLOTS). There is no autotuning at run time: each default was timed on an H100 against its
# alternatives in one process; the comment beside it gives the headline figure, and docs/log.md ("Kernels", under
# the name given) the rest. Every kernel without an entry was best, or within noise, at the defaults.
KERNEL_NAMES = ("cumsum", "h", "h-narrow", "h-carry", "a", "a-small", "o", "dp", "dp-small", "dh", "dh-narrow",
                "dh-carry", "dx", "ds", "dg")
SHAPE_SUFFIXES = ("@gqa", "@m128")  # the entries applied on top of a name's, in this order, where the shape has them
LAUNCH_NAMES = frozenset(KERNEL_NAMES) | {name + suffix for name in KERNEL_NAMES for suffix in SHAPE_SUFFIXES}
DEFAULT_LAUNCH: dict[str, dict[str, int]] = {
    # 8 warps, 1 stage: ~2x 4 warps and 3 (pipelining its short loop costs occupancy); ND auto: 1.3b 541 -> 473 us
    "dx": dict(num_warps=8, num_stages=1, ND=0),
    # ND auto: 1.3b 334 -> 255 us; 32-row blocks halve the float32 tiles (sm_90 spills 128 -> 40 bytes): 270 -> 226
    # ("Products ahead of the walks, and row blocks")
    "o": dict(ND=0, RB=32),
    # FUSED: 1.3b fwd+bwd 2.362 -> 2.315 ms; WHOLE: 32 heads of 64 1648 -> 1027 us; 1 stage: 1050 -> 868 us ("kernel_ds
    # a chunk a program by default", "kernel_ds at one pipeline stage")
    "ds": dict(FUSED=True, WHOLE=True, num_stages=1),
    # 3 stages: 1.3b 399 -> 376 us over 4 launches (2 warps: 2.3x slower); SPLIT: 405 -> 367, h1 125 -> 94 ("The
    # walks' instructions"); kernel_dh gained nothing from SPLIT (294 -> 279 / 285)
    "h": dict(num_warps=4, num_stages=3, SPLIT=True),
    # 16-wide tiles (B 1, long T): kernel_h 2434 -> 1890 us, kernel_dh 1686 -> 1322 at B 1 T 16K
    "h-narrow": dict(num_warps=8, num_stages=2),
    "dh-narrow": dict(num_warps=8, num_stages=2),
    # kernel_a at D <= 128: a chunk a program: 32 heads of 64 1960 -> 1253 us, 16 of 128 1204 -> 772 ("kernel_a a
    # chunk a program"); for grouped heads one program a kv head at 1 stage: 32 on 8 kv heads 1317 -> 1045
    "a-small": dict(WHOLE=True),
    "dp-small": dict(WHOLE=True),
    **{f"{name}@gqa": dict(WHOLE=True, GROUP=True, num_stages=1) for name in ("a-small", "dp-small")},
    # kernel_a at D > 128: chunk programs in 32-row blocks: 1.3b 415 -> 303 us, hd256 581 -> 427 (at D <= 128 the
    # blocks lost: hd64 1264 -> 1393; "kernel_a in row blocks at D > 128")
    **{name: dict(WHOLE=True, RB=32) for name in ("a", "dp")},
    # above 64 slots: the [64, M] float32 tiles spill at 4 warps; 8 warps cut fwd+bwd 16.46 -> 9.40 ms (16 heads of 128)
    # and 8.33 -> 5.98 (4 of 512), and lost at M = 64. kernel_a keeps its sub-block programs there (WHOLE not timed at
    # M = 128); kernel_ds one 128-wide tile (64-wide lost: 9.91 against 9.33 ms); kernel_h and kernel_dh take the
    # launcher's 64-wide tiles (9.33 -> 9.14 ms), the carry and narrow kernels, not timed there, one tile ("Slot tiles
    # and kv-head programs, timed")
    **{f"{name}@m128": dict(num_warps=8, WHOLE=False, RB=0) for name in ("a", "dp")},
    **{f"{name}@m128": dict(num_warps=8, num_stages=2, WHOLE=False) for name in ("a-small", "dp-small")},
    "o@m128": dict(num_warps=8, ND=1, RB=0),
    "dx@m128": dict(ND=1),
    "ds@m128": dict(num_warps=8, BM=128, WHOLE=False, num_stages=3),  # as timed: Triton's default stages
    **{f"{name}@m128": dict(BM=128) for name in ("h-narrow", "h-carry", "dh-narrow", "dh-carry")},
}


@dataclass
class KernelSettings:
    """The Triton kernels' switches (module docstring). H100 figures are GPU time unless named otherwise; docs/log.md
    ("Kernels") has the measurements behind each default. Fields:

    pdl: programmatic dependent launch (Hopper and later) for the decode kernels and the one-token GEMV: a kernel
        starts while the one before it drains and waits inside (`gdc_wait`) for its memory; a decode step is ~270
        small kernels at batch 1. Never under the interpreter or before sm_90.
    chunk_warps: warps per program of the chunked kernels. At 8 most of them stop spilling on sm_90, yet the 1.3b
        fwd+bwd ran 1.3x slower: 4.
    launch: per-kernel launch options over chunk_warps (DEFAULT_LAUNCH), held read-only: assign a new dict (or use
        override) to change them.
    chunk_states: storage of the chunk-start states the forward writes and the chunk kernels read back (accumulation
        and returned final states are float32 in every mode; float32 inputs are unaffected):
        "forward" (default): the inputs' dtype for the states only the forward's kernels read, float32 for those
            the backward reads (recomputed or kept): 1.3b fwd+bwd 2.708 -> 2.603 ms against "float32", same memory;
        "float32": all float32;
        "input": all in the inputs' dtype, as fla-core stores them: half the backward's state traffic (1.3b 2.79 ->
            2.54 ms, 944 -> 816 MiB), but with final-state cotangents dg's boundary term comes from the
            whole-sequence sum (cumsum.py), 3.1x the torch backend's dg error in bf16 at T = 2048: opt-in;
        "auto": "input" where no final-state cotangent can reach the backward (recomputed states where none
            arrives, kept states where the call returns no final states), "forward" elsewhere, so dg's boundary
            term always comes from states that keep it accurate. Opt-in until GPU-tested and timed
            (benchmarks/recipes/chunk-states.sh).
    state_grads: storage of the reverse walks' chunk-end state gradients dH (written by kernel_dh and its carry,
        read by kernel_dx and kernel_ds): "float32" (default) or "auto": the inputs' 16-bit dtype where no
        final-state cotangent reaches the backward (a training step), float32 where one does (there dg's boundary
        term near the sequence's end leans on them, as for chunk_states "auto"). Half of dH's traffic and memory
        (2 x NT * H * D * M * 2 bytes fewer: 134 MB at 1.3b); kernel_ds's x @ dH then runs as one 16-bit dot.
        Opt-in until GPU-tested and timed. Float32 inputs are unaffected.
    keep_states: the chunked op's default for its `keep_states` argument (None there): keep the forward's chunk-start
        states for the backward (NT * H * (K + V) * M values, stored as chunk_state_dtype says) instead of
        recomputing them: 2 of a fwd+bwd's 4 state walks. Off until timed (with "auto", the same recipe).
    state_dots: the operands of the state kernels' products (kernel_h: x^T (s * decay); kernel_dh: y^T (a * decay))
        for 16-bit inputs: "split" (default: the float32 decayed weights as a 16-bit head plus the 16-bit rounding of
        the rest, two 16-bit dots, ~2^-16 relative in bf16 against tf32's 2^-11; 1.3b fwd+bwd 2.654 -> 2.474 ms
        against "float32"), "float32" (the weights in float32, inputs upcast: tf32 dots for bf16, 3xTF32 for fp16)
        or "input" (one 16-bit dot, as fla-core: faster still, but its dg is 2.1-3.3x the torch backend's error,
        test_gpu_16bit_state_dots_within_2x_of_the_torch_backend, a strict xfail: opt-in).
    mixed_dots: the kernels ("a": kernel_a, forward and backward; "o", "dx", "ds") whose float32-by-bf16 products
        run as two bf16 dots, the float32 operand split in its bf16 rounding and the rest (~2^-16 relative,
        tiles.mixed_dot); the others upcast the bf16 operand to one tf32 dot (2^-11). bf16 inputs only (fp16 parts
        would overflow past 65504). Default {"a"}: kernel_a 1219 -> 1109 us at 32 heads of 64, level elsewhere;
        kernel_o lost 36-43% at head dims <= 128 and kernel_dx 30% for grouped heads ("SPLIT's wrong results were
        the test's").
    factor_span: the largest decay span (max over slots of Gl_first - Gl_last inside a 16-row sub-block) at which
        the diagonal sub-block is factored through a reference row into a tensor-core dot instead of taken pairwise
        (`tiles.sub_block_span`); e^30 stays far from float32's e^88. -1 never factors, inf always does (tests).
    state_tile_max: the widest D tile of the sequential state kernels (chunk_h, chunk_dh); `launch.state_tile`
        narrows it, down to 16, while the programs would not fill the SMs once (B = 1 at long T).
    state_segments: None: the forward state walk is split into segments from the shape (`chunk_h.state_segments`);
        an int forces that many (1 = never).
    segment_tile_max: the widest D tile of a walk split into segments (the split is decided at state_tile_max's
        tiles). 128 against 64: 1.3b-t16k 2.770 -> 2.628 ms fwd+bwd; as state_tile_max it split B 8 T 2K's walks
        and lost there (2.316 -> 2.663).
    segment_dh: the reverse state walk in segments too (B 1 T 16K: kernel_dh 1317 -> 545 us a launch, fwd+bwd 4.82
        -> 3.92 ms; B 8 T 2K takes one segment).
    prewarm: on a new configuration's first eager CUDA call, compile all of its kernels in parallel threads before
        running them (`launch.compile_in_parallel`; a cold 1.3B fwd+bwd took ~20 s compiled one by one, ~9 s so).
    direct_launch: launch a chunked-op kernel already compiled for the same specialization through its launcher,
        without `JITFunction.run`'s per-launch binding and keying (`gsa.ops.triton.direct`): 0.03-0.44 ms less host
        time a fwd+bwd in 7 of 8 A/Bs (`benchmarks/host_time.py`), where the host is the bound (small batches).
    overlap: launch an op's independent kernels on a second CUDA stream (`gsa.ops.triton.streams`): the value pass's
        state walk beside the key pass's walk and kernel_a, the reverse walks beside the kernels they do not feed.
        The walks are latency-bound at ~12% occupancy. fwd+bwd one stream -> two: 1.3b 2.323 -> 2.256 ms, 1.3b-t16k
        3.181 -> 2.770, gqa32-8 5.086 -> 4.886.
    overlap_min_rows: the smallest B * T * HQ at which the op takes the second stream. Below it the op's wall time is
        the host's, which the stream waits lengthen (1.3b-b1, 8K rows: 1.953 -> 2.308 ms with two streams); the
        shapes that gained have 64K rows or more.
    decode_gemv: which one-token decode products run as `gsa.ops.triton.gemv` (weights loaded before waiting on the
        kernel before) instead of cuBLAS: "qkvf" (a GSA layer's q|k|v|slot-logit product), "o" (its o_proj),
        "gate_up" (the MLP's); -0.15 ms a GSA-1.3B token on an H100 for the three.
    """

    pdl: bool = True
    chunk_warps: int = 4
    launch: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: dict(DEFAULT_LAUNCH))
    chunk_states: str = "forward"
    state_grads: str = "float32"
    keep_states: bool = False
    state_dots: str = "split"
    mixed_dots: frozenset[str] = frozenset({"a"})
    factor_span: float = 30.0
    state_tile_max: int = 64
    state_segments: int | None = None
    segment_tile_max: int = 128
    segment_dh: bool = True
    prewarm: bool = True
    direct_launch: bool = True
    overlap: bool = True
    overlap_min_rows: int = 32768
    decode_gemv: frozenset[str] = frozenset({"qkvf", "o", "gate_up"})

    def __setattr__(self, name, value):
        # Every assignment counts as a change (`version`): the launchers memoize what they derive from the settings
        # per version (launch.settings_memo). So the launch options are read-only mappings (set a new dict to change
        # one: an in-place edit would not be seen) and a set of kernel names becomes a frozenset.
        if name == "launch" and isinstance(value, dict | types.MappingProxyType):
            value = types.MappingProxyType({k: types.MappingProxyType(dict(v)) for k, v in value.items()})
        elif isinstance(value, set):
            value = frozenset(value)
        object.__setattr__(self, name, value)
        object.__setattr__(self, "_version", getattr(self, "_version", 0) + 1)

    @property
    def version(self) -> int:
        """How many assignments the fields have had: what the launchers' memos are keyed on."""
        return self._version

    @contextlib.contextmanager
    def override(self, **changes):
        """Set some fields for the duration of a block (unknown names are refused), then restore them."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"KernelSettings has no field(s) {sorted(unknown)}")
        names = set(changes.get("launch", {})) - LAUNCH_NAMES
        if names:  # a misspelt kernel name would change nothing, silently
            raise ValueError(f"SETTINGS.launch takes the kernel names {sorted(LAUNCH_NAMES)}, got {sorted(names)}")
        old = {k: getattr(self, k) for k in changes}
        for k, v in changes.items():
            setattr(self, k, v)
        try:
            yield self
        finally:
            for k, v in old.items():
                setattr(self, k, v)


SETTINGS = KernelSettings()
