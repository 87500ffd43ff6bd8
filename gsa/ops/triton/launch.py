"""Launching the GSA Triton kernels: tile sizes, launch options from SETTINGS, programmatic dependent launch, and
compiling a configuration's kernels in parallel before its first call."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from triton.runtime.jit import JITFunction

from gsa.ops.triton.direct import launch_direct
from gsa.ops.triton.settings import SETTINGS
from gsa.ops.validation import TRITON_MAX_SLOTS


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints. The launchers use these plain versions: triton.cdiv and triton.next_power_of_2 are
    constexpr functions, ~3 us a host call, and a forward+backward makes dozens of such calls."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 << max(0, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=1024)
def block(n: int, cap: int) -> int:
    """Tile size for a dimension of n: a power of two, at least 16 (tl.dot needs 16), at most cap. Cached: a
    forward+backward asks ~40 times, for a handful of sizes (the launchers call it at run time, on plain ints)."""
    return max(16, min(cap, next_pow2(n)))



def settings_memo(fn):
    """Memoize fn (hashable arguments) per SETTINGS.version: what a launcher derives from the settings and the shapes
    (launch options, tiles, walk plans) is computed once per configuration instead of on every call. A fwd+bwd asks
    ~40 such questions, and its host time is the wall clock of small shapes (docs/log.md, "Kernels"). A dict result
    is returned as a copy (the launchers pop options from theirs). Exceptions (refused settings) are not memoized."""
    memo: dict = {}
    version = [None]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if version[0] != SETTINGS.version:
            memo.clear()
            version[0] = SETTINGS.version
        key = (args, tuple(kwargs.items()))
        try:
            value = memo[key]
        except KeyError:
            value = memo[key] = fn(*args, **kwargs)
        return dict(value) if type(value) is dict else value

    return wrapper


@functools.lru_cache(maxsize=8)
def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (0 for any other device)."""
    return _sm_count(torch.device(device))



@functools.lru_cache(maxsize=8)
def _pdl_capable(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def use_pdl(device: torch.device) -> bool:
    """Whether kernels on `device` launch with programmatic dependent launch (SETTINGS.pdl)."""
    return SETTINGS.pdl and os.environ.get("TRITON_INTERPRET") != "1" and _pdl_capable(torch.device(device))


def pdl_launch(device: torch.device) -> dict:
    """Launch keywords of a kernel with a `PDL` constexpr (its gdc_wait / gdc_launch_dependents): PDL, and Triton's
    launch_pdl option where it is on."""
    return dict(PDL=True, launch_pdl=True) if use_pdl(device) else dict(PDL=False)

def check_slots(M: int) -> None:
    """The kernels hold a chunk's M slots in one tile of at most TRITON_MAX_SLOTS (gsa.ops.validation): refuse more
    here too, for callers of gsa.ops.triton that bypass gsa.ops' checks."""
    if M > TRITON_MAX_SLOTS:
        raise ValueError(f"the Triton kernels take at most {TRITON_MAX_SLOTS} slots (M), got M = {M}: use "
                         "gsa.ops.gated_slot_attention(..., backend='torch')")

def state_tile(D: int, sequences_x_heads: int, device: torch.device, slot_tiles: int = 1) -> int:
    """D-tile width of the sequential state kernels: SETTINGS.state_tile_max, narrowed (down to 16) while the
    programs (sequences x heads x D tiles x slot tiles) would not fill the SMs once."""
    bd = block(D, SETTINGS.state_tile_max)
    while bd > 16 and sequences_x_heads * cdiv(D, bd) * slot_tiles < _sm_count(torch.device(device)):
        bd //= 2
    return bd

WIDE_SLOTS = 64  # above this many slots a kernel's launch options come from its "@m128" entry too


@settings_memo
def launch_options(name: str, slots: int | None = None, grouped: bool = False, **defaults) -> dict:
    """The launch keywords of kernel `name`: num_warps = SETTINGS.chunk_warps and `defaults`, then
    SETTINGS.launch[name], then, for grouped heads (`grouped`: several query heads a kv head),
    SETTINGS.launch[name + "@gqa"], then, with more than WIDE_SLOTS slots, SETTINGS.launch[name + "@m128"]."""
    opts = {"num_warps": SETTINGS.chunk_warps, **defaults, **SETTINGS.launch.get(name, {})}
    if grouped:
        opts.update(SETTINGS.launch.get(name + "@gqa", {}))
    if slots is not None and slots > WIDE_SLOTS:
        opts.update(SETTINGS.launch.get(name + "@m128", {}))
    return opts


@settings_memo
def slot_options(name: str, M: int) -> dict:
    """launch_options(name) of a kernel that takes M slots in slot tiles (kernel_ds, the state kernels): its slot
    tile BM (default: all M slots up to 64; a power of two >= 16, for tl.arange and tl.dot) and the number of slot
    tiles NM."""
    opts = launch_options(name, slots=M, BM=min(block(M, 128), 64))
    BM = opts["BM"]
    if not isinstance(BM, int) or BM < 16 or BM & (BM - 1):
        raise ValueError(f"SETTINGS.launch[{name!r}]['BM'] (the slot tile) must be a power of two >= 16, got {BM!r}")
    return {**opts, "NM": cdiv(M, BM)}


def d_tiles_per_program(name: str, opts: dict, n_tiles: int, programs: int, device: torch.device) -> int:
    """How many of its `n_tiles` D tiles a program of kernel `name` walks: launch option "ND" (popped from `opts`),
    default 1. A program builds what does not depend on D (decayed slot weights, mixing matrices) once for its tiles
    instead of once a tile. ND = 0 (auto): the most tiles, a divisor of n_tiles of at least 4, that still leave 4
    programs an SM, given `programs` programs a D tile (on a CPU: all tiles); else 1. On the H100, kernel_o and
    kernel_dx gained at 4 and 8 tiles a program and lost at 2 (docs/log.md, "Kernels")."""
    nd = opts.pop("ND", 1)
    if not isinstance(nd, int) or isinstance(nd, bool) or nd < 0:
        raise ValueError(f"SETTINGS.launch[{name!r}]['ND'] (D tiles a program) must be an int >= 0, got {nd!r}")
    if nd:
        return min(nd, n_tiles)
    floor = 4 * sm_count(device)
    fits = [d for d in range(4, n_tiles + 1) if n_tiles % d == 0 and (n_tiles // d) * programs >= floor]
    return max(fits, default=1)


def check_flag(name: str, option: str, value, meaning: str) -> None:
    """A bool launch option (kernel_a's "GROUP", kernel_ds's "FUSED") must be a bool; `meaning` names it in the
    error."""
    if not isinstance(value, bool):
        raise ValueError(f"SETTINGS.launch[{name!r}][{option!r}] ({meaning}) must be a bool, got {value!r}")


_launch_key_memo: list = [None, None, None]  # [the SETTINGS.launch dict it was taken from, the fields, the key]


def launch_key() -> tuple:
    """What the compiled kernels depend on besides the inputs (part of a configuration's identity for the first-call
    warm pass, taken on every eager call). Memoized per SETTINGS.launch dict: sorting its ~35 entries took 13-25 us a
    call on a 2-core CPU, inside a forward whose host time is its wall clock at the 1.3B shape (docs/log.md,
    "Kernels"). An option changed inside that dict in place is not seen here (the next call with it then compiles
    its kernels one by one instead of in parallel; results are unaffected): SETTINGS.override(launch=...) sets a new
    dict."""
    fields = (SETTINGS.chunk_warps, SETTINGS.chunk_states, SETTINGS.state_grads, SETTINGS.state_dots,
              frozenset(SETTINGS.mixed_dots))
    memo = _launch_key_memo
    if memo[0] is not SETTINGS.launch or memo[1] != fields:  # the dict itself is held, so its id is never reused
        memo[:] = [SETTINGS.launch, fields,
                   (*fields, tuple(sorted((k, tuple(sorted(v.items()))) for k, v in SETTINGS.launch.items())))]
    return memo[2]


def _setting(field: str, choices: tuple[str, ...]) -> str:
    """SETTINGS.<field>, one of `choices` (anything else is refused by name)."""
    value = getattr(SETTINGS, field)
    if value not in choices:
        names = [repr(c) for c in choices]
        raise ValueError(f"SETTINGS.{field} must be {', '.join(names[:-1])} or {names[-1]}, got {value!r}")
    return value


CHUNK_STATES = ("float32", "forward", "input", "auto")


def chunk_state_dtype(dtype: torch.dtype, backward: bool, final_states: bool = False) -> torch.dtype:
    """The storage dtype of chunk-start states (SETTINGS.chunk_states) that the backward reads (`backward`: the
    states it recomputes, or the forward's when they are kept for it) or that only the forward's own kernels read.
    final_states: for the backward, whether final-state cotangents reach it (or, for states the forward keeps, may:
    the call returns final states); "auto" then stores them float32, else as the inputs."""
    mode = _setting("chunk_states", CHUNK_STATES)
    if mode == "auto":
        mode = "forward" if final_states else "input"
    return dtype if mode == "input" or (mode == "forward" and not backward) else torch.float32


STATE_GRADS = ("float32", "auto")


def state_grad_dtype(dtype: torch.dtype, final_states: bool) -> torch.dtype:
    """The storage dtype of the backward's chunk-end state gradients dH (SETTINGS.state_grads) for inputs of
    `dtype`; final_states: whether final-state cotangents reach the backward ("auto" then keeps float32)."""
    mode = _setting("state_grads", STATE_GRADS)
    return dtype if mode == "auto" and not final_states else torch.float32  # float32 inputs: float32 either way


STATE_DOTS = ("float32", "input", "split")


def state_dots_mode(dtype: torch.dtype) -> int:
    """The state kernels' product operands (SETTINGS.state_dots) for inputs of `dtype`, as tiles.state_product's
    DOTS: 0 float32, 1 the inputs' 16-bit dtype, 2 the float32 weights split into two 16-bit parts. Float32 inputs
    take 0."""
    mode = _setting("state_dots", STATE_DOTS)
    return STATE_DOTS.index(mode) if dtype in (torch.bfloat16, torch.float16) else 0


MIXED_DOT_KERNELS = ("a", "o", "dx", "ds")
_MIXED_DOT_SET = frozenset(MIXED_DOT_KERNELS)


def mixed_dots_mode(dtype: torch.dtype, kernel: str) -> int:
    """tiles.mixed_dot's MIX for `kernel` ("a": kernel_a, forward and backward; "o", "dx", "ds") on inputs of
    `dtype`: 1 where SETTINGS.mixed_dots names the kernel and the inputs are bf16, else 0 (fp16 and float32 inputs
    keep dot_precision's float32 dots)."""
    names = SETTINGS.mixed_dots
    if isinstance(names, str) or not _MIXED_DOT_SET.issuperset(names):
        raise ValueError(f"SETTINGS.mixed_dots must be a set of kernel names from {MIXED_DOT_KERNELS}, got {names!r}")
    return int(kernel in names and dtype == torch.bfloat16)


_DOT_PRECISION = {torch.float32: "ieee", torch.float16: "tf32x3"}


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot precision for float32 operands (intermediates such as P, decayed weights and states).

    tf32 keeps 10 mantissa bits: well under bf16 input rounding (7 bits), but as coarse as fp16's, so fp16 inputs
    get 3xTF32 (near float32) and float32 inputs full IEEE float32."""
    return _DOT_PRECISION.get(dtype, "tf32")

# First-call compilation in parallel. A cold first forward+backward of the 1.3B shape compiled its 14 kernels one
# after another as each was first launched: 19.7-24.2 s on the H100 host, over a 20 s budget.
# Compiling them in threads overlaps Triton's passes and ptxas (14 kernels for sm_90 on a 2-core machine: 13.5 s
# serial, 8.6 s in threads; on the H100 host's 16 cores the first call took 8.9 s, cold cache). Inside
# compile_in_parallel() the launchers queue each launch's compilation instead of running it; leaving the block
# compiles the queue in a thread pool and fills Triton's caches, so the real launches that follow find their kernels
# compiled. Triton 3.6 (the H100 image's) also builds a C launcher for each kernel signature with the system C
# compiler, and loads the binary, at a compiled kernel's first launch: serially, in the launching thread (a cold
# first call at 1.3b took 13.3 s where its compiles alone take ~4-5 s on 16 cores; docs/log.md, "Kernels"). The
# workers do that too (`_init_handles`, Triton 3.x's lazy launcher and module load). Each worker first takes the
# calling thread's CUDA device: Triton compiles and caches a kernel for the current device, and a worker thread's
# is device 0, so a process on another GPU (a DDP rank) would compile for device 0 and compile again at its
# first launch.
_queue = threading.local()


def launch(kernel, grid, direct: bool = True):
    """kernel[grid]: through the compiled kernel's launcher where `direct` and SETTINGS.direct_launch
    (`gsa.ops.triton.direct`; not under the interpreter), or inside compile_in_parallel() a stand-in that queues
    kernel.warmup(..., grid=grid) with the same arguments (same specialisation, nothing runs). The chunked op's
    kernels take direct launches (GPU-tested bitwise, tests/ops/test_direct_launch.py); the model's RMSNorm and
    SwiGLU kernels pass direct=False until such a test has run for them."""
    jobs = getattr(_queue, "jobs", None)
    if jobs is not None:
        return lambda *args, **kwargs: jobs.append((kernel, grid, args, kwargs))
    if direct and SETTINGS.direct_launch and isinstance(kernel, JITFunction):
        return lambda *args, **kwargs: launch_direct(kernel, grid, args, kwargs)
    return kernel[grid]


@contextlib.contextmanager
def compile_in_parallel(workers: int | None = None):
    """Queue the launches made inside the block (their outputs stay unwritten), then compile them, with their
    launchers, in `workers` threads on the calling thread's CUDA device (default: the CPU count, at most 16). Yields
    the queue: (kernel, grid, args, kwargs) a launch."""
    _queue.jobs = jobs = []
    try:
        yield jobs
    finally:
        _queue.jobs = None
    workers = workers or min(16, os.cpu_count() or 1)
    device = torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None

    def build(kernel, grid, args, kwargs):
        if device is not None:
            torch.cuda.set_device(device)
        compiled = kernel.warmup(*args, grid=grid, **kwargs)
        init = getattr(compiled, "_init_handles", None)  # absent under the interpreter (nothing to load)
        if init is not None:
            init()

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        for f in [pool.submit(build, *job) for job in jobs]:
            f.result()
