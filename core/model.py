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
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        arrays, meta = _load_npz(path)
        try:
            initial = None
            if "initial_h" in arrays or "initial_c" in arrays:
                initial = (arrays.pop("initial_h"), arrays.pop("initial_c"))
            followups = []
            for i, f in enumerate(meta.get("followups") or []):
                state = None
                if f"followup{i}_initial_h" in arrays:
                    state = (arrays.pop(f"followup{i}_initial_h"), arrays.pop(f"followup{i}_initial_c"))
                followups.append(Call(arrays.pop(f"followup{i}_inputs"), bool(f.get("reset")), state))
            mv = meta.get("masking_value")
            return cls(config=dict(meta["config"]), inputs=arrays.pop("inputs"),
                       kernel=arrays.pop("kernel", None),
                       recurrent_kernel=arrays.pop("recurrent_kernel", None),
                       bias=arrays.pop("bias", None), initial_state=initial,
                       mask=arrays.pop("mask", None),
                       dropout_mask=arrays.pop("dropout_mask", None),
                       recurrent_dropout_mask=arrays.pop("recurrent_dropout_mask", None),
                       cotangent=arrays.pop("cotangent", None),
                       training=bool(meta.get("training", False)),
                       dtype=str(meta.get("dtype", "float32")),
                       followups=followups, masking_value=None if mv is None else float(mv),
                       roundtrip=str(meta.get("roundtrip") or ""),
                       unknown_dims=[str(d) for d in meta.get("unknown_dims") or []],
                       case_id=str(meta.get("case_id", "")))
        except (KeyError, TypeError) as exc:
            raise CaseFileError(f"{path}: not a case file (missing {exc})") from None


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
        arrays, meta = _load_npz(path)
        try:
            n = int(meta["n_outputs"])
            err = meta.get("error")
            status = meta["status"]
            if status not in STATUSES:
                raise CaseFileError(f"{path}: unknown status {status!r}")
            return cls(status=status, outputs=[arrays[f"out{i}"] for i in range(n)],
                       structure=str(meta.get("structure", "")),
                       dtypes=[str(d) for d in meta.get("dtypes", [])],
                       error=ErrorInfo(**err) if err else None,
                       grads={k[5:]: v for k, v in arrays.items() if k.startswith("grad_")},
                       weights={k[7:]: v for k, v in arrays.items() if k.startswith("weight_")},
                       followup_outputs=[[arrays[f"followup{i}_out{j}"] for j in range(m)]
                                         for i, m in enumerate(meta.get("n_followup_outputs", []))],
                       detail=str(meta.get("detail", "")),
                       duration_s=float(meta.get("duration_s", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, CaseFileError):
                raise
            raise CaseFileError(f"{path}: not an outcome file ({exc!r})") from None

    def summary(self) -> str:
        if self.status == OK:
            shapes = ", ".join(str(tuple(a.shape)) for a in self.outputs)
            return f"ok: {self.structure} [{shapes}]"
        if self.status == RAISED and self.error:
            return f"raised {self.error.type} at {self.error.phase}: {self.error.message[:300]}"
        return f"{self.status}: {self.detail[-600:]}"


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
# npz helpers: data only, never pickle

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
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise CaseFileError(f"{path}: no such file") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CaseFileError(f"{path}: unreadable npz ({exc})") from None
    raw = arrays.pop("__meta__", None)
    if raw is None or raw.dtype != np.uint8:
        raise CaseFileError(f"{path}: no metadata record")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaseFileError(f"{path}: corrupt metadata ({exc})") from None
    if not isinstance(meta, dict):
        raise CaseFileError(f"{path}: metadata is not a mapping")
    return arrays, meta
