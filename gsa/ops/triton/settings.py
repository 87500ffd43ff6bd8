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

# Launch options of single kernels, by the name of their launch_options() call ("cumsum", "h", "a", "o", "dp", "dh",
# "dx", "ds", "dg"; "h-narrow" / "dh-narrow": the state kernels at 16-wide tiles; "h-carry" / "dh-carry": the
# segmented walks' carry kernels; "a-small" / "dp-small": kernel_a at D <= 128): num_warps, num_stages; for "o" and
# "dx", the D tile "BD"; for "ds" and the six state-kernel names, the slot tile "BM" (a power of two >= 16; without an
# entry the launchers take M up to 64 a tile; {"BM": 128} walks M = 128 as one tile: chunk_h.py, "Slot tiles";
# chunk_ds.py); for kernel_a's four names, "GROUP" (a bool, default False): one program per kv head for all its query
# heads, which then share the loads of Gl and s rows and the decayed slot weights (chunk_a.py; the default for
# grouped heads at D <= 128, below; an entry replaces the name's defaults, so {"a-small": {"GROUP": True}} also drops
# its WHOLE unless it restates it). The rest were chosen for the H100 from one side-by-side sweep of
# every kernel over a few options, no autotuning at run time: kernel_dx at 8 warps and 1 stage ran ~2x faster than at 4
# and 3 (software pipelining of its short loop costs shared memory and occupancy); kernel_h gained ~5-15% at 2 stages,
# and at 3 (a later A/B, 4 launches a fwd+bwd) 1.3b 399 -> 376 us, 16 heads of 128 444 -> 396, 32 of 64 and grouped 32/8
# within 2% (at 2 warps 2.3x slower); at 16-wide tiles (B 1, T 16K) the state kernels want 8 warps and 2 stages
# (kernel_h 2434 -> 1890 us, kernel_dh 1686 -> 1322), while at 64- and 32-wide tiles 8 warps lost; kernel_a's sub-block
# programs at head dims <= 128 took 2 warps and 2 stages (grouped 1612 -> 1529 us, small-head 458 -> 368; at K = 512
# the default stays: 429 vs 491 at 2 warps) until WHOLE (below) replaced them there. Every other kernel was best or
# within noise at the default.
# A name + "@m128" entry applies on top of the name's above 64 slots (launch.WIDE_SLOTS): at M = 128 the [64, M]
# float32 tiles of kernel_a, kernel_o and kernel_dh spill at 2-4 warps, and 8 warps cut the H100's fwd+bwd from
# 16.46 to 9.40 ms (16 heads of 128) and 8.33 to 5.98 ms (4 heads of 512), while at M = 64 the same change lost
# (4.29 -> 5.31 ms, 16 heads of 128): BENCHMARKS.md, "Kernels". A second A/B (docs/log.md, "Kernels", "Slot tiles
# and kv-head programs, timed") then took kernel_h and kernel_dh in 64-wide slot tiles at 4 warps (9.33 -> 9.14
# and 5.90 -> 5.76 ms) and kept kernel_ds in one 128-wide tile at 8 warps (64-wide tiles: 9.91 and 6.20 ms).
# The carry and narrow-tile state kernels keep one tile: their shapes (B 1, long T) were not in that A/B.
# A name + "@gqa" entry applies on top of the name's where a kv head has several query heads (HQ > H), before
# "@m128": kernel_a with one program per kv head (GROUP) at 4 warps and 1 stage cut fwd+bwd 5.82 -> 5.69 ms (32
# query heads on 8 kv heads of 128) and 2.92 -> 2.85 ms (16 on 4), where 4 warps and 1 stage without GROUP lost
# (6.32, 3.16 ms); ptxas spills at GROUP: 2 warps 2 stages 4360 bytes a thread, 4 warps 1 stage 280.
# For "h" / "h-narrow" and "dh" / "dh-narrow", "SPLIT" (a bool, False where an entry leaves it out; on for "h"): the
# walk's chunks that end inside their sequence without masks (chunk_h.chunk_gsa_fwd_kernel_h,
# chunk_dh.chunk_gsa_bwd_kernel_dh); compiled for sm_90 at 1.3b a chunk step is 1372 instructions against 2267 masked
# for kernel_h (fla-core's walk: 1255), 3584 / 2111 against 4777 / 3334 for kernel_dh's two passes (fla-core's:
# 2087), with more spill bytes (docs/log.md, "Kernels", "The walks' instructions"). H100, kernel_h's four launches at
# 1.3b in two calls: 387 / 375 -> 334 / 335 us and 447 (405 / 403 / 506 in the same process with kernel_h's launch
# unchanged) -> 343 / 376; h1 124 / 123 -> 93 / 94; 16 heads of 128, 32 of 64 and grouped 32/8 within the spread; a
# third call, off / on / off in one process: 1.3b 405 / 367 / 400, h1 125 / 94 / 125, grouped 16/4 171 / 148 / 189
# (benchmarks/results/h100/ab-split-h-1207.json).
# kernel_dh gained nothing measurable (1.3b 294 -> 279 / 285 us, elsewhere within the spread): off there. Within 2x of
# the torch backend's error on the GPU (tests/ops/test_walk_split.py, every walk entry, bf16 and fp16).
# For "ds", "FUSED" (a bool, default True): with one query head a kv head, a pass's x_j . y_t from the D loop of
# x_j @ dS instead of a second loop (chunk_ds.py); dropped for grouped heads. H100, fwd+bwd: 1.3b 2.362 -> 2.315 ms,
# 16 heads of 128 3.731 -> 3.668, 32 of 64 5.577 -> 5.461, 8 of 256 2.748 -> 2.690.
# For "o" and "dx", "ND": how many D tiles a program walks (launch.d_tiles_per_program; 0 = chosen from the shape):
# what does not depend on D (the decayed slot weights, P) is then built once for them. H100, GPU time of a fwd+bwd,
# ND = 0 against 1: 1.3b 2.658 -> 2.508 ms (kernel_o 334 -> 255 us, kernel_dx 541 -> 473), B 1 T 16K 3.565 ->
# 3.382, 8 heads of 256 3.016 -> 2.921; at 2 tiles a program it lost (kernel_o at 1.3b 334 -> 347 us; 128-wide heads
# +1.5%), so the auto choice takes 4 or more or none. Above 64 slots (not timed) "@m128" keeps one tile a program.
# For "o", and for kernel_a's four names with WHOLE, "RB": the rows of a chunk a program takes (chunks.row_block; 0 =
# the whole chunk; kernel_a's row blocks factor through their own first row, chunk_a.py; its figures are beside "a"
# below; kernel_ds's key rows in blocks lost 15-25% on the H100 and were removed: docs/log.md). kernel_o: at 32
# of a 64-row chunk the [64, 64] float32 tiles of P and the slot weights halve (ptxas, sm_90, 1.3b: spill stack 128
# -> 40 bytes, shared memory 49 -> 25 KB); H100, kernel_o over a fwd+bwd (two rounds, one call): 1.3b 270, 272 ->
# 226, 225 us; 8 heads of 256 332, 331 -> 253, 251; 16 of 128 422, 427 -> 405, 408; 32 of 64 504, 503 -> 486, 483;
# grouped 32/8 743, 754 -> 739, 745 (docs/log.md, "Kernels", "Products ahead of the walks, and row blocks"). Above 64
# slots (not timed) the whole chunk.
# For kernel_a's four names and "ds", "WHOLE" (a bool, False where an entry leaves it out): one program a chunk instead
# of a 16-row sub-block (chunk_a.py, chunk_ds.py; docs/algorithm.md, "Chunked algorithm"). H100, GPU time of kernel_a's
# two launches at 4 warps (WHOLE entries replacing the names' defaults): 32 heads of 64 1960 -> 1253 us, 16 of 128 1204
# -> 772, grouped 32/8 1693 -> 1311 (GROUP as well), so it is the default at D <= 128 (M <= 64); at 4 heads of 512 424
# -> 480 (8 warps: 415), where the sub-block programs stay. kernel_ds at 4 warps: 1648 -> 1027, 942 -> 695, 1213 -> 661,
# 442 -> 432 us (docs/log.md, "Kernels", "kernel_a a chunk a program"), and beside kernel_a's new default (H100,
# 2026-12-07, one call): 1649 -> 1032, 926 -> 696, 1216 -> 660, 436 -> 429; its GPU accuracy tests passed in bf16 and
# fp16 at 4 warps, so it is the default at every head dim (at M = 128, "ds@m128", not timed: off). At 1 pipeline stage
# ("num_stages": 1; ptxas, sm_90: spill stack 2920 -> 1656 bytes a thread, shared memory 64 -> 24 KB) kernel_ds took
# 1050 -> 868 us at 32 heads of 64, 691 -> 590 at 16 of 128, 655 -> 612 grouped 32/8, 429 -> 366 at 4 of 512, 528 -> 456
# at 8 of 256 (H100, two rounds within 2% of each other; fwd+bwd -1 to -4%); kernel_a's grouped chunk programs ("@gqa")
# at 1 stage 1317 -> 1045 us (fwd+bwd 3.896 -> 3.572 ms), while its one-head chunk programs at 1 stage gained nothing at
# 32 heads of 64 and lost 4% at 16 of 128, so they keep Triton's 3 (docs/log.md, "Kernels", "kernel_ds at one pipeline
# stage"). GPU accuracy tests at both passed.
KERNEL_NAMES = ("cumsum", "h", "h-narrow", "h-carry", "a", "a-small", "o", "dp", "dp-small", "dh", "dh-narrow",
                "dh-carry", "dx", "ds", "dg")
SHAPE_SUFFIXES = ("@gqa", "@m128")  # the entries applied on top of a name's, in this order, where the shape has them
LAUNCH_NAMES = frozenset(KERNEL_NAMES) | {name + suffix for name in KERNEL_NAMES for suffix in SHAPE_SUFFIXES}
DEFAULT_LAUNCH: dict[str, dict[str, int]] = {
    "dx": dict(num_warps=8, num_stages=1, ND=0),
    "o": dict(ND=0, RB=32),
    "ds": dict(FUSED=True, WHOLE=True, num_stages=1),
    "h": dict(num_warps=4, num_stages=3, SPLIT=True),
    "h-narrow": dict(num_warps=8, num_stages=2),
    "dh-narrow": dict(num_warps=8, num_stages=2),
    # kernel_a at D <= 128: a chunk a program (WHOLE), also for grouped heads, one program per kv head (GROUP)
    "a-small": dict(WHOLE=True),
    "dp-small": dict(WHOLE=True),
    **{f"{name}@gqa": dict(WHOLE=True, GROUP=True, num_stages=1) for name in ("a-small", "dp-small")},
    # kernel_a at D > 128: the chunk programs in 32-row blocks (RB). H100, GPU time of kernel_a's two launches against
    # the 16-row sub-block programs, two rounds: 1.3b 415 / 410 -> 303 / 302 us, hd256 581 / 620 -> 427 / 438 (fwd+bwd
    # 2.226 -> 2.135 and 2.722 -> 2.523 ms in round 1). At D <= 128 RB 32 lost (hd64 1264 -> 1393 us), so "-small"
    # keeps the whole chunk (docs/log.md, "Kernels", "kernel_a in row blocks at D > 128").
    **{name: dict(WHOLE=True, RB=32) for name in ("a", "dp")},
    # above 64 slots (the comment above); kernel_h and kernel_dh take the launcher's 64-wide slot tiles; kernel_a keeps
    # its sub-block programs there at the 2 stages they were timed with (WHOLE was not timed at M = 128)
    **{f"{name}@m128": dict(num_warps=8, WHOLE=False, RB=0) for name in ("a", "dp")},
    **{f"{name}@m128": dict(num_warps=8, num_stages=2, WHOLE=False) for name in ("a-small", "dp-small")},
    "o@m128": dict(num_warps=8, ND=1, RB=0),
    "dx@m128": dict(ND=1),
    "ds@m128": dict(num_warps=8, BM=128, WHOLE=False, num_stages=3),  # as timed: Triton's default stages
    **{f"{name}@m128": dict(BM=128) for name in ("h-narrow", "h-carry", "dh-narrow", "dh-carry")},
}


@dataclass
class KernelSettings:
    """The Triton kernels' switches (module docstring). Fields:

    pdl: programmatic dependent launch (Hopper and later) for the decode kernels and the one-token GEMV: a kernel
        starts while the one before it in the stream drains and waits inside (`gdc_wait`) for its memory. A decode
        step is ~270 small kernels at batch 1 (BENCHMARKS.md, "Decoding"). Never under the interpreter or before
        sm_90.
    chunk_warps: warps per program of the chunked kernels. Compiled for sm_90 most of them sit at 255 registers and
        spill at 4 warps; at 8 the spills nearly vanish, yet the 1.3b fwd+bwd ran 1.3x slower: 4 stays.
    launch: per-kernel launch options over chunk_warps (DEFAULT_LAUNCH), held read-only: assign a new dict (or use
        override) to change them.
    chunk_states: storage of the chunk-start states the forward writes and the chunk kernels read back: "forward"
        (the default: the inputs' dtype for the states only the forward's own kernels read, kernel_a and kernel_o;
        float32 for those the backward reads, recomputed or kept), "float32", or "input" (the inputs' dtype for all,
        as fla-core stores them: half the state traffic and memory). Float32 inputs are unaffected. "forward" keeps
        dg's exact boundary term and passes the GPU accuracy tests; H100, GPU time of a fwd+bwd against "float32":
        1.3b 2.708 -> 2.603 ms (forward alone 0.719 -> 0.609), hd128 3.979 -> 3.858, gqa32-8 5.478 -> 5.250, same
        memory (docs/log.md, "Kernels"). "input" also halves the backward's state traffic (1.3b: 2.79 -> 2.54 ms, 944
        -> 816 MiB); dg takes its chunk-boundary term from the 16-bit states where no final-state cotangent arrives
        (a training step; 1.06x the torch backend's dg error in fp16 at T = 2048, not yet GPU-tested in bf16), else
        the whole-sequence sum (cumsum.py), 3.1x the torch backend's dg error in bf16 at T = 2048: opt-in. "auto"
        is "input" where no final-state cotangent can reach the backward (recomputed states where none arrives,
        kept states where the call returns no final states) and "forward" elsewhere, so dg always takes its
        boundary term from states that keep it accurate.
        Accumulation and returned final states are float32 in every mode.
    keep_states: the chunked op's default for its `keep_states` argument (None there): keep the forward's chunk-start
        states for the backward (NT * H * (K + V) * M values in chunk_state_dtype's storage) instead of recomputing
        them, 2 of the 4 state walks of a fwd+bwd.
    state_dots: the operands of the state kernels' products (kernel_h: x^T (s * decay); kernel_dh: y^T (a * decay)):
        "split" (the default: the float32 decayed weights as a 16-bit head plus the 16-bit rounding of the rest, two
        16-bit dots against the 16-bit inputs, ~2^-16 relative in bf16, under tf32's 2^-11), "float32" (the weights
        in float32, inputs upcast; tf32 dots for bf16, 3xTF32 for fp16) or "input" (both in the inputs' dtype, one
        16-bit dot, as fla-core does). Float32 inputs are unaffected. H100, 1.3b shape, GPU time of a fwd+bwd,
        "float32" -> "split": 2.654 -> 2.474 ms (kernel_h 521 -> 405 us over its 4 launches, kernel_dh 371 -> 293);
        16 heads of 128 3.867 -> 3.714, grouped 32/8 5.239 -> 4.999; it passes the GPU accuracy tests
        (test_gpu_split_state_dots_within_2x_of_the_torch_backend). "input" ran faster still (kernel_h 436 us) but
        its dg fails that test (2.1-3.3x the torch backend's error at B 2, T 130 in bf16 and fp16): the weights are
        rounded in the states but not in the per-token dG terms whose cancellation dg relies on
        (test_gpu_16bit_state_dots_within_2x_of_the_torch_backend, a strict xfail); opt-in.
    mixed_dots: the kernels (of "a": kernel_a, "o", "dx", "ds") whose products of a float32 operand (P, decayed slot
        weights, float32 states and their gradients) with a bf16 one (q, k, v, dO, states stored as the inputs) run
        as two bf16 dots, the float32 operand as its bf16 rounding plus the bf16 rounding of the rest (~2^-16
        relative: tiles.mixed_dot); the others upcast the bf16 operand to a tf32 dot (2^-11). bf16 inputs only: fp16
        parts would overflow past 65504 and drop tiny gradients' low bits (fp16 keeps 3xTF32,
        launch.dot_precision); float32 inputs are unaffected. H100, GPU time over a fwd+bwd, three copies of each
        in one process (docs/log.md, "Kernels", "SPLIT's wrong results were the test's"): kernel_a's two launches
        (the split reaches its backward, dO @ Hv^T) 32 heads of 64 1219 / 1240 / 1235 -> 1109 / 1119 / 1119 us,
        16 of 128 724 / 656 / 708 -> 618 / 659 / 657, 4 of 512 and grouped 32/8 level; kernel_o lost 36-43% at
        head dims <= 128 (16 of 128 393 -> 550 us) and kernel_dx 30% grouped, so only "a" by default.
    factor_span: the largest decay span (max over slots of Gl_first - Gl_last inside a 16-row sub-block) at which
        the diagonal sub-block is factored through a reference row into a tensor-core dot instead of taken pairwise
        (`tiles.sub_block_span`); e^30 stays far from float32's e^88. -1 never factors, inf always does (tests).
    state_tile_max: the widest D tile of the sequential state kernels (chunk_h, chunk_dh); `launch.state_tile`
        narrows it, down to 16, while the programs would not fill the SMs once (B = 1 at long T).
    state_segments: None: the forward state walk is split into segments from the shape (`chunk_h.state_segments`);
        an int forces that many (1 = never).
    segment_tile_max: the widest D tile of a state walk split into segments (the split is decided at
        state_tile_max's tiles; then the segments are counted for these). H100, fwd+bwd ms at 64 -> 128 (two streams
        on): 1.3b-t16k 2.770 -> 2.628, hd128-t16k 4.179 -> 4.105, 1.3b-b1 2.308 -> 2.267; shapes whose walks do not
        split (1.3b, hd128, hd64, gqa32-8) never take it. As state_tile_max = 128, which also split B 8 T 2K's walks,
        it lost there (2.316 -> 2.663).
    segment_dh: the reverse state walk in segments too, as the forward one (H100, B 1 T 16K: kernel_dh 1317 -> 545
        us a launch, fwd+bwd 4.82 -> 3.92 ms; B 8 T 2K takes one segment).
    prewarm: on a new configuration's first eager CUDA call, compile all of its kernels in parallel threads before
        running them (`launch.compile_in_parallel`; a cold 1.3B fwd+bwd took ~20 s compiled one by one, ~9 s so).
    direct_launch: launch a chunked-op kernel already compiled for the same specialization through its launcher,
        without `JITFunction.run`'s per-launch binding and keying (`gsa.ops.triton.direct`). The op is host-bound at
        the 1.3B shape on the H100 host (1.7-2.6 ms of enqueue a fwd+bwd); this took 0.03-0.44 ms off it in 7 of 8
        A/Bs (`benchmarks/host_time.py`, docs/log.md, "Kernels").
    overlap: launch an op's independent kernels on a second CUDA stream (`gsa.ops.triton.streams`): in the forward
        the value pass's state walk beside the key pass's walk and kernel_a; in the backward the reverse walks
        beside the kernels they do not feed. The walks are latency-bound at ~12% occupancy, so the two share the SMs.
        H100, fwd+bwd ms one stream -> two: 1.3b 2.323 -> 2.256 (fwd 0.501 -> 0.475), hd128 3.686 -> 3.631, hd64
        5.525 -> 5.508, gqa32-8 5.086 -> 4.886, 1.3b-t16k 3.181 -> 2.770, hd128-t16k 4.592 -> 4.179.
    overlap_min_rows: the smallest B * T * HQ at which the op takes the second stream. Below it an op's wall time
        is the host's, which the stream waits lengthen: 1.3b-b1 (B 1, T 2K, 4 heads: 8K rows; 0.46 ms of kernels in
        1.95 ms) went 1.953 -> 2.308 ms with two streams. The measured shapes that gained have 64K rows or more.
    decode_gemv: which one-token decode products run as `gsa.ops.triton.gemv` (weights loaded before waiting on the
        kernel before) instead of cuBLAS: "qkvf" (a GSA layer's q|k|v|slot-logit product), "o" (its o_proj),
        "gate_up" (the MLP's); -0.15 ms a GSA-1.3B token on an H100 for the three.
    """

    pdl: bool = True
    chunk_warps: int = 4
    launch: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: dict(DEFAULT_LAUNCH))
    chunk_states: str = "forward"
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
