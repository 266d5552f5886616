"""The torch reference's C kernels: built on first use, loaded with ctypes.

``convlstm_small.c`` holds three (see its comments for why): the whole
inference of a small problem in one call (``convlstm_small_*``), one step's
gate arithmetic for problems whose convolutions the library computes
(``lstm_gates_*``), and the training path's cell, forward and backward
(``lstm_cell_fwd_*``, ``lstm_cell_bwd_*``).  ``winograd.c`` holds the 3x3
convolution of big float32 problems by Winograd's F(2x2, 3x3)
(``winograd3x3_f32``) and its weight gradient (``winograd3x3_wgrad_f32``).  Both are compiled here with the machine's C compiler
the first time it is needed, into ``$CONVLSTM_NATIVE_DIR`` (default: the
user's cache, ``~/.cache/convlstm-conformance/native``, so an installed
package never writes beside its own files), under a name carrying the hash of the source, the
flags and the CPU, so an edit or a different machine builds afresh.  Builds are
written to a temporary name and renamed, so parallel test workers never load a
half-written library.

Nothing here is required: without a compiler, or with ``CONVLSTM_NATIVE=0``,
:func:`library` returns None, :func:`status` says why, and the reference
computes with PyTorch operators instead.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

SOURCES = (Path(__file__).with_name("convlstm_small.c"), Path(__file__).with_name("winograd.c"))
# -march=native: the library is built on the machine that runs it.  No
# -ffast-math: the kernel's NaN handling and rounding trick depend on IEEE
# semantics.  What is asked for instead: fused multiply-adds (one rounding
# where there were two), comparisons that may not trap (so the clamps in the
# activations become vector blends), no errno from math calls, and no
# rewriting of short copy loops into memcpy calls (a call per 4 floats was a
# tenth of the kernel's time).
CFLAGS = ["-O3", "-march=native", "-ffp-contract=fast", "-fno-trapping-math",
          "-fno-math-errno", "-fno-tree-loop-distribute-patterns", "-fPIC", "-shared",
          "-std=c11"]
#: Activation codes the kernel implements (see its enum); others fall back.
ACTIVATIONS = {"linear": 0, "tanh": 1, "sigmoid": 2, "hard_sigmoid": 3, "relu": 4}
#: The kernel's first argument, in the order of its G_* enum: geometry and
#: options, then x's five strides (b, t, y, x, c), then the initial state's
#: four (b, y, x, f).
GEOMETRY = ("B", "T", "H", "W", "C", "F", "Ho", "Wo", "kh", "kw", "sh", "sw", "dh", "dw",
            "pt", "pl", "rt", "rl", "backwards", "act", "ract",
            "xs_b", "xs_t", "xs_y", "xs_x", "xs_c", "ss_b", "ss_y", "ss_x", "ss_f")
#: The first argument of lstm_gates_*, in the order of its GG_* enum.
GATE_GEOMETRY = ("B", "Ho", "Wo", "F", "act", "ract", "zs_b", "zs_y", "zs_x", "cs_b", "cs_y",
                 "cs_x", "hs_b", "hs_y", "hs_x", "os_b", "os_y", "os_x")
#: The first argument of winograd3x3_f32, in the order of its WG_* enum.
WINOGRAD_GEOMETRY = ("B", "Ho", "Wo", "Hi", "Wi", "pt", "pl", "K", "N", "acc", "block", "us",
                     "is_b", "is_y", "is_x", "os_b", "os_y", "os_x")

_lock = threading.Lock()
_state: dict = {}


def _cpu_id() -> str:
    """The CPU model and its feature flags: a library built with -march=native
    on one machine may use instructions another lacks (same model name in a
    VM with other flags included), so both go into the library's name."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key = line.split(":", 1)[0].strip()
                if key in ("model name", "flags", "Features", "CPU part") and key not in found:
                    found[key] = line.strip()
    except OSError:
        pass
    return "\n".join(found.values()) or platform.processor() or platform.machine()


def _compiler() -> str | None:
    cc = os.environ.get("CC") or "cc"
    return shutil.which(cc) or shutil.which("gcc")


def _build_dir() -> Path:
    if os.environ.get("CONVLSTM_NATIVE_DIR"):
        return Path(os.environ["CONVLSTM_NATIVE_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "convlstm-conformance" / "native"


def _build(cc: str) -> Path:
    src = b"".join(path.read_bytes() for path in SOURCES)
    tag = hashlib.sha256(src + " ".join([cc, *CFLAGS, _cpu_id()]).encode()).hexdigest()[:16]
    out_dir = _build_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError:
        out_dir = Path(tempfile.gettempdir()) / "convlstm-native"
        out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"convlstm_small-{tag}.so"
    if target.exists():
        _prune(target)
        return target
    fd, tmp = tempfile.mkstemp(prefix=target.stem, suffix=".so.tmp", dir=out_dir)
    os.close(fd)
    try:
        proc = subprocess.run([cc, *CFLAGS, *map(str, SOURCES), "-o", tmp, "-lm"],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _prune(target)
    return target


def _prune(target: Path) -> None:
    """Remove builds of earlier sources or other machines' flags beside
    ``target``; a process still using one keeps its mapping after the unlink."""
    for old in target.parent.glob("convlstm_small-*.so"):
        if old != target:
            try:
                old.unlink()
            except OSError:
                pass


def _load():
    if os.environ.get("CONVLSTM_NATIVE", "1") == "0":
        return None, "disabled by CONVLSTM_NATIVE=0"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler (cc or gcc) on PATH"
    try:
        lib = ctypes.CDLL(str(_build(cc)))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return None, f"build or load failed: {exc}"
    p, i64, i64p = ctypes.c_void_p, ctypes.c_int64, ctypes.POINTER(ctypes.c_int64)
    # Each kernel, in a float32 and a float64 copy: (argument types, result type).
    signatures = {
        "convlstm_small": ([i64p] + [p] * 9, ctypes.c_int),
        "lstm_gates": ([i64p] + [p] * 4, ctypes.c_int),
        "lstm_cell_fwd": ([i64, i64] + [p] * 5, None),
        "lstm_cell_bwd": ([i64, i64] + [p] * 7, None),
        "activation": ([p, i64, ctypes.c_int], None),
    }
    for name, (argtypes, restype) in signatures.items():
        for suffix in ("_f32", "_f64"):
            fn = getattr(lib, name + suffix)
            fn.argtypes, fn.restype = argtypes, restype
    lib.winograd3x3_f32.argtypes = [i64p] + [p] * 4
    lib.winograd3x3_f32.restype = ctypes.c_int
    lib.winograd3x3_wgrad_f32.argtypes = [i64p] + [p] * 3
    lib.winograd3x3_wgrad_f32.restype = ctypes.c_int
    return lib, f"built with {Path(cc).name} {' '.join(CFLAGS[:2])}"


def library():
    """The loaded kernel library, or None (then :func:`status` says why)."""
    lib = _state.get("lib", False)
    if lib is False:
        with _lock:
            if "lib" not in _state:
                _state["lib"], _state["status"] = _load()
            lib = _state["lib"]
    return lib


def status() -> str:
    library()
    return _state["status"]


_ARRAYS: dict = {}


def geometry_array(values: tuple) -> ctypes.Array:
    """The int64 geometry argument (GEOMETRY, GATE_GEOMETRY or WINOGRAD_GEOMETRY) for ``values``
    (cached: building a ctypes array costs microseconds, as much as a
    fuzzer-sized call's work)."""
    arr = _ARRAYS.get(values)
    if arr is None:
        lengths = (len(GEOMETRY), len(GATE_GEOMETRY), len(WINOGRAD_GEOMETRY))
        if len(values) not in lengths:
            raise ValueError(f"{len(values)} geometry values: the kernels take one of {lengths}")
        if len(_ARRAYS) >= 1024:
            _ARRAYS.clear()
        arr = _ARRAYS[values] = (ctypes.c_int64 * len(values))(*values)
    return arr
