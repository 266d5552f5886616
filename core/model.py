"""The one interface every ConvLSTM2D implementation is driven through.

A :class:`Case` is everything needed to run the layer once: a config in Keras
argument names, the input sequence, canonical Keras-layout weights and the
optional call arguments.  An :class:`Adapter` maps the canonical weights into
its own parameters, runs the case and returns an :class:`Outcome`: the arrays
the layer returned, or the error it raised and at which phase.

Canonical layout (see ``specs/convlstm2d.yaml``, clause ``SEM-WEIGHT-LAYOUT``):

* ``kernel``           ``(kh, kw, C_in, 4F)``, gate blocks i, f, c, o along the last axis
* ``recurrent_kernel`` ``(kh, kw, F, 4F)``, same gate order
* ``bias``             ``(4F,)`` or ``None`` when ``use_bias`` is False

Arrays travel as float64 holding values exactly representable in the case's
dtype, so every implementation starts from bit-identical numbers.  Cases and
outcomes serialise to ``.npz`` files that load without pickle.
"""
from __future__ import annotations

import json
import lzma
import math
import stat
import struct
import zipfile
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:   # the feature table imports this module
    from convlstm_conformance.features import Capabilities

# Phases at which a layer may reject a configuration.
CONSTRUCT = "construct"
CALL = "call"

# Outcome statuses.  "ok" and "raised" are answers from the implementation;
# "refused" means the adapter declined a case outside its capabilities;
# "crashed" / "timeout" / "adapter-error" are failures of the harness boundary
# (a dead worker, a hang, a bug in the adapter's own glue code).
OK, RAISED, REFUSED, CRASHED, TIMEOUT, ADAPTER_ERROR = (
    "ok", "raised", "refused", "crashed", "timeout", "adapter-error")
STATUSES = (OK, RAISED, REFUSED, CRASHED, TIMEOUT, ADAPTER_ERROR)

class CaseFileError(ValueError):
    """A case or outcome file that cannot be read as one."""


@dataclass
class Call:
    """A further call on the same layer object (the layer keeps its state)."""

    inputs: np.ndarray
    reset: bool = False          # reset_states() before this call
    initial_state: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class Case:
    """One run of the layer, in canonical form."""

    config: dict[str, Any]
    inputs: np.ndarray
    # Without weights the layer runs with its own initializers and reports the
    # weights it used in Outcome.weights.
    kernel: np.ndarray | None = None
    recurrent_kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    initial_state: tuple[np.ndarray, np.ndarray] | None = None
    mask: np.ndarray | None = None
    training: bool = False
    dtype: str = "float32"
    # Per-gate dropout masks, already scaled (0 or 1/(1-rate)), for adapters that
    # let them be injected: input masks (4, B, H, W, C_in) and recurrent masks
    # (4, B, H', W', F), in channels_last order whatever the data_format.
    dropout_mask: np.ndarray | None = None
    recurrent_dropout_mask: np.ndarray | None = None
    # Ask for gradients of sum(output * cotangent) where given.
    cotangent: np.ndarray | None = None
    # Further calls on the same layer object (stateful layers): each a Call.
    followups: list["Call"] = field(default_factory=list)
    # Feed the inputs through an upstream Masking(mask_value) layer, as users
    # build models, instead of passing ``mask``.
    masking_value: float | None = None
    # Serialize and rebuild the layer ("config": get_config/from_config,
    # "saved": save and load a model holding it); the rebuilt layer's outputs
    # come back as Outcome.followup_outputs[0].
    roundtrip: str = ""
    # Build the layer for an input shape with these dimensions unknown (None):
    # any of "rows", "cols", "channels".  Nothing is computed.
    unknown_dims: list[str] = field(default_factory=list)
    case_id: str = ""

    # -- derived facts -------------------------------------------------
    @property
    def channels_first(self) -> bool:
        return self.config.get("data_format") == "channels_first"

    @property
    def filters(self) -> int:
        return int(self.config["filters"])

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"inputs": self.inputs}
        for name in ("kernel", "recurrent_kernel", "bias", "mask",
                     "dropout_mask", "recurrent_dropout_mask", "cotangent"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.initial_state is not None:
            out["initial_h"], out["initial_c"] = self.initial_state
        for i, call in enumerate(self.followups):
            out[f"followup{i}_inputs"] = call.inputs
            if call.initial_state is not None:
                out[f"followup{i}_initial_h"], out[f"followup{i}_initial_c"] = call.initial_state
        return out

    # -- serialisation -------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {"config": self.config, "training": self.training,
                "dtype": self.dtype, "case_id": self.case_id,
                "followups": [{"reset": c.reset} for c in self.followups],
                "masking_value": self.masking_value, "roundtrip": self.roundtrip,
                "unknown_dims": list(self.unknown_dims)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        arrays = self.arrays()
        arrays["__meta__"] = _json_bytes(self.meta())
        np.savez(path, **arrays)
        return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> "Case":
        """Read a case file, checked against the protocol (docs/worker-protocol.md);
        raises CaseFileError naming the file and what is wrong."""
        arrays, meta = _load_npz(path)
        f = _Fields(path, meta, "case")
        config = _check_config(f)
        f.unknown(CASE_META_KEYS)
        follow_meta = f.get("followups", list, [])
        if len(follow_meta) > MAX_FOLLOWUPS:
            raise f.fail("followups", f"lists {len(follow_meta)} calls, more than the limit "
                                      f"MAX_FOLLOWUPS = {MAX_FOLLOWUPS}")
        for entry in follow_meta:
            if not isinstance(entry, dict) or set(entry) - {"reset"} \
                    or not isinstance(entry.get("reset", False), bool):
                raise f.fail("followups", f"holds {_describe(entry)}; each entry is "
                                          f'{{"reset": true or false}}')
        _check_case_arrays(path, arrays, len(follow_meta))
        initial = None
        if "initial_h" in arrays:
            initial = (arrays.pop("initial_h"), arrays.pop("initial_c"))
        followups = []
        for i, entry in enumerate(follow_meta):
            state = None
            if f"followup{i}_initial_h" in arrays:
                state = (arrays.pop(f"followup{i}_initial_h"), arrays.pop(f"followup{i}_initial_c"))
            followups.append(Call(arrays.pop(f"followup{i}_inputs"), bool(entry.get("reset")),
                                  state))
        mv = f.get("masking_value", float)
        return cls(config=config, inputs=arrays.pop("inputs"),
                   kernel=arrays.pop("kernel", None),
                   recurrent_kernel=arrays.pop("recurrent_kernel", None),
                   bias=arrays.pop("bias", None), initial_state=initial,
                   mask=arrays.pop("mask", None),
                   dropout_mask=arrays.pop("dropout_mask", None),
                   recurrent_dropout_mask=arrays.pop("recurrent_dropout_mask", None),
                   cotangent=arrays.pop("cotangent", None),
                   training=f.get("training", bool, False),
                   dtype=f.choice("dtype", DTYPES, "float32"),
                   followups=followups, masking_value=None if mv is None else float(mv),
                   roundtrip=f.choice("roundtrip", ROUNDTRIPS, ""),
                   unknown_dims=f.strings("unknown_dims", UNKNOWN_DIMS),
                   case_id=f.get("case_id", str, ""))


@dataclass
class ErrorInfo:
    """An exception raised by the implementation, recorded as data."""

    type: str               # class name, e.g. "ValueError"
    message: str
    phase: str              # CONSTRUCT or CALL
    mro: list[str] = field(default_factory=list)  # base class names, for "is a ValueError"

    @classmethod
    def from_exception(cls, exc: BaseException, phase: str) -> "ErrorInfo":
        return cls(type=type(exc).__name__, message=str(exc)[:4000], phase=phase,
                   mro=[k.__name__ for k in type(exc).__mro__])

    def is_a(self, type_name: str) -> bool:
        return type_name == self.type or type_name in self.mro


@dataclass
class Outcome:
    """What an adapter reports for one case."""

    status: str
    # The layer's return value, flattened: [output] or [output, h, c].
    outputs: list[np.ndarray] = field(default_factory=list)
    # "tensor" when the layer returned a single tensor, "list" for a sequence.
    structure: str = ""
    # dtype names of what the layer returned, before any conversion.
    dtypes: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    # The canonical weights the layer ran with, when the case gave none and the
    # layer used its own initializers (kernel, recurrent_kernel, bias).
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    # What later calls (Case.followups) or the rebuilt layer (Case.roundtrip)
    # returned, each flattened like ``outputs``.
    followup_outputs: list[list[np.ndarray]] = field(default_factory=list)
    detail: str = ""        # refusal reason, adapter traceback, stderr tail
    duration_s: float = 0.0

    @property
    def output(self) -> np.ndarray:
        return self.outputs[0]

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self.outputs) != 3:
            raise ValueError(f"no state in an outcome with {len(self.outputs)} outputs")
        return self.outputs[1], self.outputs[2]

    def save(self, path: str | Path) -> None:
        arrays = {f"out{i}": a for i, a in enumerate(self.outputs)}
        arrays.update({f"grad_{k}": v for k, v in self.grads.items()})
        arrays.update({f"weight_{k}": v for k, v in self.weights.items()})
        for i, outs in enumerate(self.followup_outputs):
            arrays.update({f"followup{i}_out{j}": a for j, a in enumerate(outs)})
        meta = {"status": self.status, "structure": self.structure, "dtypes": self.dtypes,
                "error": asdict(self.error) if self.error else None,
                "detail": self.detail, "duration_s": self.duration_s,
                "n_outputs": len(self.outputs),
                "n_followup_outputs": [len(o) for o in self.followup_outputs]}
        arrays["__meta__"] = _json_bytes(meta)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Outcome":
        """Read a result file, checked against the protocol; raises
        CaseFileError naming the file and what is wrong."""
        arrays, meta = _load_npz(path)
        f = _Fields(path, meta, "outcome")
        status = f.get("status", str, required=True)
        if status not in STATUSES:
            raise CaseFileError(f"{path}: unknown status {status[:80]!r}; the protocol knows "
                                f"{', '.join(STATUSES)}")
        n = f.get("n_outputs", int, required=True)
        f.unknown(OUTCOME_META_KEYS)
        if not 0 <= n <= MAX_OUTPUTS:
            raise f.fail("n_outputs", f"is {n}; it counts returned tensors, 0 to {MAX_OUTPUTS}")
        followups = f.get("n_followup_outputs", list, [])
        if len(followups) > MAX_FOLLOWUPS or not all(
                isinstance(m, int) and not isinstance(m, bool) and 0 <= m <= MAX_OUTPUTS
                for m in followups):
            raise f.fail("n_followup_outputs", f"must list at most {MAX_FOLLOWUPS} counts "
                                               f"from 0 to {MAX_OUTPUTS}, got {_describe(followups)}")
        _check_outcome_arrays(path, arrays, n, followups)
        dtypes = f.strings("dtypes")
        if len(dtypes) > MAX_OUTPUTS:
            raise f.fail("dtypes", f"lists {len(dtypes)} names, more than {MAX_OUTPUTS}")
        return cls(status=status, outputs=[arrays[f"out{i}"] for i in range(n)],
                   structure=f.choice("structure", STRUCTURES, ""),
                   dtypes=dtypes, error=_error_info(f),
                   grads={k[5:]: v for k, v in arrays.items() if k.startswith("grad_")},
                   weights={k[7:]: v for k, v in arrays.items() if k.startswith("weight_")},
                   followup_outputs=[[arrays[f"followup{i}_out{j}"] for j in range(m)]
                                     for i, m in enumerate(followups)],
                   detail=f.get("detail", str, ""),
                   duration_s=float(f.get("duration_s", float, 0.0)))

    def summary(self) -> str:
        if self.status == OK:
            shapes = ", ".join(str(tuple(a.shape)) for a in self.outputs)
            return f"ok: {self.structure} [{shapes}]"
        if self.status == RAISED and self.error:
            return f"raised {self.error.type} at {self.error.phase}: {self.error.message[:300]}"
        return f"{self.status}: {self.detail[-600:]}"


def _error_info(f: "_Fields") -> ErrorInfo | None:
    err = f.get("error", dict)
    if err is None:
        if f.meta.get("status") == RAISED:
            raise f.fail("error", "is missing; a raised outcome says what was raised")
        return None
    extra = set(err) - {"type", "message", "phase", "mro"}
    sub = _Fields(f.path, err, "outcome error")
    if extra:
        raise f.fail("error", f"has unknown key {sorted(map(str, extra))[0][:80]!r}; it holds "
                              f"type, message, phase, mro")
    return ErrorInfo(type=sub.get("type", str, required=True),
                     message=sub.get("message", str, ""),
                     phase=sub.choice("phase", (CONSTRUCT, CALL), CALL),
                     mro=sub.strings("mro"))


def outcome_problem(outcome: Any) -> str:
    """Why ``outcome`` is not an Outcome the judge can read, or "": the
    check an in-process adapter's return value gets (what a result file gets
    from Outcome.load), so garbage becomes a recorded adapter error instead
    of a traceback inside the judge."""
    if not isinstance(outcome, Outcome):
        return f"returned {_describe(outcome)} instead of an Outcome"
    if outcome.status not in STATUSES:
        return f"returned the unknown status {_describe(outcome.status)}"
    if not isinstance(outcome.outputs, list):
        return f"returned outputs as {_describe(outcome.outputs)}, not a list"
    named = [(f"output {i}", a) for i, a in enumerate(outcome.outputs)]
    if not isinstance(outcome.followup_outputs, list) or not all(
            isinstance(o, list) for o in outcome.followup_outputs):
        return f"returned followup_outputs as {_describe(outcome.followup_outputs)}, not a list of lists"
    named += [(f"follow-up {i} output {j}", a) for i, outs in enumerate(outcome.followup_outputs)
              for j, a in enumerate(outs)]
    for label, table in (("gradient", outcome.grads), ("weight", outcome.weights)):
        if not isinstance(table, dict):
            return f"returned {label}s as {_describe(table)}, not a dict"
        named += [(f"{label} {k!r}", a) for k, a in table.items()]
    for label, a in named:
        if not isinstance(a, np.ndarray):
            return f"returned {label} as {_describe(a)}, not a NumPy array"
        if a.dtype.kind not in "fiub":
            what = "complex" if a.dtype.kind == "c" else str(a.dtype)
            return f"returned {label} of dtype {what}; outputs are real numbers"
        if a.ndim > MAX_NDIM:
            return f"returned {label} with {a.ndim} dimensions"
    if outcome.error is not None and not isinstance(outcome.error, ErrorInfo):
        return f"returned error as {_describe(outcome.error)}, not an ErrorInfo"
    if outcome.status == RAISED and outcome.error is None:
        return "returned status 'raised' without saying what was raised"
    for name in ("structure", "detail"):
        if not isinstance(getattr(outcome, name), str):
            return f"returned {name} as {_describe(getattr(outcome, name))}, not a string"
    if not isinstance(outcome.dtypes, list) or not all(isinstance(d, str) for d in outcome.dtypes):
        return f"returned dtypes as {_describe(outcome.dtypes)}, not a list of strings"
    return ""


class Refused(Exception):
    """Raised inside an adapter to decline a case outside its capabilities."""


class Adapter(ABC):
    """An implementation of ConvLSTM2D behind the suite's interface."""

    #: Stable name used on the command line, in reports and expectations files.
    name: str = ""
    #: True only for the suite's own float64 oracle: its outputs are judged
    #: against a second formulation (``oracle_twin``), never against itself.
    is_judge: bool = False

    @abstractmethod
    def capabilities(self) -> Capabilities:
        """The features this implementation claims."""

    @abstractmethod
    def run(self, case: Case) -> Outcome:
        """Run one case.  Must not raise: errors become outcomes."""

    def versions(self) -> dict[str, str]:
        """Versions of the packages behind this adapter."""
        return {}

    def close(self) -> None:
        """Release processes or devices held by the adapter."""


# --------------------------------------------------------------------------
# npz files: data only, never pickle, every byte bounded and checked
#
# Case and result files come from other processes and other people; reading
# one must not run code, hang, or allocate more than the bounds below, and a
# file that breaks the protocol (docs/worker-protocol.md) is refused with a
# CaseFileError naming the file, the member or field, and what is wrong,
# before anything is computed from it.  The bounds are listed in
# docs/limits.md.

MAX_FILE_BYTES = 1 << 30        # the archive on disk
MAX_MEMBERS = 256               # arrays in one archive
MAX_ARRAY_BYTES = 1 << 28       # one array's data, as its .npy header declares it (256 MiB)
MAX_TOTAL_BYTES = 1 << 30       # every member, decompressed, as the archive declares them
MAX_META_BYTES = 1 << 20        # the __meta__ JSON
MAX_JSON_DEPTH = 16             # nesting inside the metadata
MAX_NDIM = 8                    # dimensions of one array
MAX_HEADER_BYTES = 10_000       # one .npy header (numpy's own default)
MAX_FOLLOWUPS = 64              # later calls in one case
MAX_OUTPUTS = 16                # tensors one call returned
MAX_TEXT = 1 << 16              # a message, detail or identifier string, in characters
MAX_CONFIG_INT = 1 << 53        # |integer| in a config (beyond it floats cannot hold it)

#: Arguments without a default (the spec's required constructor arguments;
#: a test keeps them equal): a case's config must give them.
REQUIRED_CONFIG = ("filters", "kernel_size")
#: The dtype names a case may ask for (the spec's ``dtypes``; a test keeps them equal).
DTYPES = ("float64", "float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
ROUNDTRIPS = ("", "config", "saved")
UNKNOWN_DIMS = ("rows", "cols", "channels")
STRUCTURES = ("", "tensor", "list", "built")
GRAD_NAMES = ("inputs", "kernel", "recurrent_kernel", "bias", "initial_h", "initial_c")
WEIGHT_NAMES = ("kernel", "recurrent_kernel", "bias")
# Ranks the protocol fixes (the rest vary with the probes that test a layer's checks).
CASE_RANKS = {"kernel": 4, "recurrent_kernel": 4, "bias": 1, "mask": 2,
              "dropout_mask": 5, "recurrent_dropout_mask": 5}
CASE_META_KEYS = frozenset({"config", "training", "dtype", "case_id", "followups",
                            "masking_value", "roundtrip", "unknown_dims"})
OUTCOME_META_KEYS = frozenset({"status", "n_outputs", "structure", "dtypes", "error", "detail",
                               "duration_s", "n_followup_outputs"})


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, default=_json_default).encode("utf-8"), dtype=np.uint8)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, frozenset, set)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _load_npz(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every array of the archive at ``path`` and its metadata, checked
    against the bounds; no pickle, no object arrays."""
    arrays = _read_archive(Path(path))
    raw = arrays.pop("__meta__", None)
    if raw is None:
        raise CaseFileError(f"{path}: no metadata record (__meta__.npy)")
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise CaseFileError(f"{path}: __meta__ must be 1-D uint8 (UTF-8 JSON), got "
                            f"{raw.dtype} of shape {raw.shape}")
    return arrays, _parse_meta(path, raw.tobytes())


def _read_archive(path: Path) -> dict[str, np.ndarray]:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CaseFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise CaseFileError(f"{path}: unreadable npz ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or a device would block or never end.
        raise CaseFileError(f"{path}: unreadable npz (not a regular file)")
    if st.st_size > MAX_FILE_BYTES:
        raise CaseFileError(f"{path}: {st.st_size} bytes, larger than the limit "
                            f"MAX_FILE_BYTES = {MAX_FILE_BYTES}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            if head[:2] != b"PK":
                raise CaseFileError(f"{path}: unreadable npz (not a zip archive of .npy "
                                    f"arrays: it starts with {head!r})")
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                return _read_members(path, zf)
    except CaseFileError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            RuntimeError, NotImplementedError, OverflowError, zlib.error, lzma.LZMAError,
            struct.error, UnicodeDecodeError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: an unknown compression.
        raise CaseFileError(f"{path}: unreadable npz ({type(exc).__name__}: "
                            f"{str(exc)[:300]})") from None


def _read_members(path: Path, zf: zipfile.ZipFile) -> dict[str, np.ndarray]:
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise CaseFileError(f"{path}: {len(infos)} members, more than the limit "
                            f"MAX_MEMBERS = {MAX_MEMBERS}")
    names = [i.filename for i in infos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CaseFileError(f"{path}: member {dup[0]!r} appears more than once")
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise CaseFileError(f"{path}: members decompress to {total} bytes, more than the "
                            f"limit MAX_TOTAL_BYTES = {MAX_TOTAL_BYTES}")
    arrays: dict[str, np.ndarray] = {}
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise CaseFileError(f"{path}: member {info.filename[:200]!r} is not a .npy array")
        key = info.filename[:-len(".npy")]
        with zf.open(info) as fp:
            arrays[key] = _read_npy(f"{path}: {key}", fp, info.file_size)
    return arrays


_NPY_KINDS = {"f": "floating-point", "b": "boolean", "u": "unsigned integer",
              "i": "integer"}


def _read_npy(where: str, fp, size: int) -> np.ndarray:
    """One .npy member: header checked, then exactly the bytes it declares."""
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(
                fp, max_header_size=MAX_HEADER_BYTES)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(
                fp, max_header_size=MAX_HEADER_BYTES)
        else:
            raise CaseFileError(f"{where}: .npy format version {version} is not supported "
                                f"(1.0 and 2.0 are)")
    except CaseFileError:
        raise
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError, EOFError) as exc:
        raise CaseFileError(f"{where}: not a .npy array ({str(exc)[:200]})") from None
    if dtype.hasobject or dtype.kind not in _NPY_KINDS or dtype.fields is not None \
            or dtype.subdtype is not None:
        what = "complex" if dtype.kind == "c" else str(dtype)
        raise CaseFileError(f"{where}: dtype {what} not allowed (float64 arrays, bool masks)")
    if len(shape) > MAX_NDIM or any(not isinstance(n, int) or n < 0 for n in shape):
        raise CaseFileError(f"{where}: shape {shape!r:.200} not allowed (at most "
                            f"{MAX_NDIM} non-negative dimensions)")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_ARRAY_BYTES:
        raise CaseFileError(f"{where}: header declares {nbytes} bytes of data (shape "
                            f"{shape}), more than the limit MAX_ARRAY_BYTES = {MAX_ARRAY_BYTES}")
    if fp.tell() + nbytes != size:
        raise CaseFileError(f"{where}: header declares {nbytes} bytes of data (shape {shape}, "
                            f"{dtype}), the member holds {size - fp.tell()}")
    out = np.empty(shape, dtype=dtype.newbyteorder("="), order="F" if fortran else "C")
    view = memoryview(out.reshape(-1, order="A").view(np.uint8)) if nbytes else memoryview(b"")
    got = fp.readinto(view) if nbytes else 0
    if got != nbytes:
        raise CaseFileError(f"{where}: truncated ({got} of {nbytes} bytes)")
    if not dtype.isnative and dtype.itemsize > 1:
        out = out.view(dtype).astype(dtype.newbyteorder("="))
    return out


def _parse_meta(path: str | Path, raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_META_BYTES:
        raise CaseFileError(f"{path}: metadata of {len(raw)} bytes, more than the limit "
                            f"MAX_META_BYTES = {MAX_META_BYTES}")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CaseFileError(f"{path}: corrupt metadata ({str(exc)[:200]})") from None
    except RecursionError:
        raise CaseFileError(f"{path}: corrupt metadata (JSON nested deeper than the limit "
                            f"MAX_JSON_DEPTH = {MAX_JSON_DEPTH})") from None
    if not isinstance(meta, dict):
        raise CaseFileError(f"{path}: metadata is not a mapping")
    depth = _json_depth(meta)
    if depth > MAX_JSON_DEPTH:
        raise CaseFileError(f"{path}: corrupt metadata (JSON nested {depth} levels, more than "
                            f"the limit MAX_JSON_DEPTH = {MAX_JSON_DEPTH})")
    return meta


def _json_depth(obj: Any) -> int:
    deepest, stack = 0, [(obj, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


# -- field checks: each raises CaseFileError naming the field ----------------

class _Fields:
    """Typed reads of one metadata mapping, each naming the file and field."""

    def __init__(self, path: str | Path, meta: Mapping[str, Any], what: str):
        self.path, self.meta, self.what = path, meta, what

    def fail(self, field_: str, problem: str) -> CaseFileError:
        return CaseFileError(f"{self.path}: {self.what}: metadata field {field_!r} {problem}")

    def unknown(self, allowed: frozenset) -> None:
        extra = sorted(str(k) for k in self.meta if k not in allowed)
        if extra:
            raise CaseFileError(f"{self.path}: {self.what}: unknown metadata field "
                                f"{extra[0][:80]!r}; the protocol knows {', '.join(sorted(allowed))}")

    def get(self, key: str, kind, default: Any = None, required: bool = False) -> Any:
        if key not in self.meta or (self.meta[key] is None and not required):
            if required:
                raise CaseFileError(f"{self.path}: not a {self.what} file (missing "
                                    f"metadata field {key!r})")
            return default
        value = self.meta[key]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
                and math.isfinite(value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            name = getattr(kind, "__name__", str(kind))
            raise self.fail(key, f"must be {'a finite number' if kind is float else name}, "
                                 f"got {_describe(value)}")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise self.fail(key, f"is longer than {MAX_TEXT} characters")
        return value

    def choice(self, key: str, allowed: tuple, default: Any) -> Any:
        value = self.get(key, str, default)
        if value not in allowed:
            raise self.fail(key, f"is {value[:80]!r}, not one of {list(allowed)}")
        return value

    def strings(self, key: str, allowed: tuple | None = None) -> list[str]:
        items = self.get(key, list, [])
        for v in items:
            if not isinstance(v, str) or len(v) > MAX_TEXT or (allowed and v not in allowed):
                raise self.fail(key, f"holds {_describe(v)}; expected strings"
                                     + (f" from {list(allowed)}" if allowed else ""))
        return list(items)


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _check_config(fields: _Fields) -> dict[str, Any]:
    config = fields.get("config", dict, required=True)
    for key, value in config.items():
        if not isinstance(key, str) or len(key) > 200:
            raise fields.fail("config", f"has a key {_describe(key)}; keys are argument names")
        problem = _config_value_problem(value, 0)
        if problem:
            raise fields.fail("config", f"[{key!r}] {problem}")
    for key in REQUIRED_CONFIG:
        if key not in config:
            raise fields.fail("config", f"has no {key!r}, a required argument without a default")
    return dict(config)


def _config_value_problem(value: Any, depth: int) -> str:
    """Why a config value is not one the protocol carries: None, a boolean,
    a bounded integer, a finite float, a short string, or a short list of
    those (tuples such as kernel_size, nested once)."""
    if value is None or isinstance(value, (bool, str)):
        return "" if not isinstance(value, str) or len(value) <= 1000 else "is a string over 1000 characters"
    if isinstance(value, int):
        return "" if abs(value) <= MAX_CONFIG_INT else f"is an integer beyond ±2**53"
    if isinstance(value, float):
        return "" if math.isfinite(value) else f"is {value}, not a finite number"
    if isinstance(value, list):
        if depth >= 2 or len(value) > 16:
            return "is a list nested deeper than 2 or longer than 16"
        for v in value:
            problem = _config_value_problem(v, depth + 1)
            if problem:
                return problem
        return ""
    return f"is {_describe(value)}; config values are null, booleans, numbers, strings or lists"


def _check_finite(path: str | Path, key: str, a: np.ndarray) -> None:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = ~np.isfinite(a)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise CaseFileError(f"{path}: {key}: {int(bad.sum())} NaN or infinite value(s), the "
                            f"first at {first}; case arrays must be finite")


def _check_case_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], n_followups: int) -> None:
    allowed = {"inputs", "kernel", "recurrent_kernel", "bias", "initial_h", "initial_c", "mask",
               "cotangent", "dropout_mask", "recurrent_dropout_mask"}
    for i in range(n_followups):
        allowed |= {f"followup{i}_inputs", f"followup{i}_initial_h", f"followup{i}_initial_c"}
    for key, a in arrays.items():
        if key not in allowed:
            raise CaseFileError(f"{path}: unknown member {key[:80]!r}"
                                + (" (its follow-up is not listed in the metadata 'followups')"
                                   if key.startswith("followup") else ""))
        want = "bool" if key == "mask" else "float64"
        if a.dtype != np.dtype(want):
            raise CaseFileError(f"{path}: {key}: dtype {a.dtype}, the protocol says {want}")
        rank = CASE_RANKS.get(key)
        if rank is not None and a.ndim != rank:
            raise CaseFileError(f"{path}: {key}: {a.ndim}-D array of shape {a.shape}, the "
                                f"protocol says {rank}-D")
        _check_finite(path, key, a)
    for key, a in arrays.items():
        if key.endswith("inputs") and 0 in a.shape:
            raise CaseFileError(f"{path}: {key}: shape {a.shape} has an empty dimension "
                                f"(0 time steps, rows, columns, channels or batch)")
    if "inputs" not in arrays:
        raise CaseFileError(f"{path}: not a case file (missing array 'inputs')")
    for prefix in [""] + [f"followup{i}_" for i in range(n_followups)]:
        has = [f"{prefix}initial_{s}" in arrays for s in "hc"]
        if any(has) and not all(has):
            raise CaseFileError(f"{path}: {prefix}initial_h and {prefix}initial_c come together; "
                                f"only {'initial_h' if has[0] else 'initial_c'} is here")
    for i in range(n_followups):
        if f"followup{i}_inputs" not in arrays:
            raise CaseFileError(f"{path}: metadata lists {n_followups} follow-up call(s); "
                                f"followup{i}_inputs is missing")


def _check_outcome_arrays(path: str | Path, arrays: Mapping[str, np.ndarray], n: int,
                          followups: list[int]) -> None:
    allowed = {f"out{i}" for i in range(n)}
    allowed |= {f"grad_{g}" for g in GRAD_NAMES} | {f"weight_{w}" for w in WEIGHT_NAMES}
    for i, m in enumerate(followups):
        allowed |= {f"followup{i}_out{j}" for j in range(m)}
    for key, a in arrays.items():
        if key not in allowed:
            raise CaseFileError(f"{path}: unknown member {key[:80]!r} (n_outputs is {n}, "
                                f"n_followup_outputs {followups})")
        if a.dtype != np.float64:
            raise CaseFileError(f"{path}: {key}: dtype {a.dtype}, the protocol says float64 "
                                f"(the layer's own dtypes go in the metadata 'dtypes')")
    missing = sorted(allowed - set(arrays) - {k for k in allowed if k.startswith(("grad_", "weight_"))})
    if missing:
        raise CaseFileError(f"{path}: metadata promises {missing[0]!r}, which is not in the file")
