"""The feature table: every capability an implementation may claim, declared once.

A *feature* is a part of the spec an implementation may or may not implement
(a padding mode, strides, masks, float16, gradients, ...).  Each entry of
:data:`FEATURES` says, in one place:

* its kind: a *set* of supported values (paddings, activations, dtypes) or a
  *bool* (supported at all), and what an adapter that says nothing claims;
* ``covers``: the spec arguments, or call arguments, it is about;
* ``needs``: what a case requires of it (the value, or whether it is used);
* ``admits``: for a drawn argument value, whether a claim allows it (this is
  how the strategies keep draws inside an adapter's claims);
* ``call_options``: the ways a clause calls the layer (``call:`` in the spec,
  keyword arguments of ``strategies.make_case``) that need the feature;
* ``probes``: how to ask for the feature when it is not claimed
  (``conformance/test_capabilities.py`` checks those cases are refused).

Everything else that speaks of features is derived from the table:
:class:`Capabilities`, :func:`required_features`, :func:`restrictions`,
:func:`feature_for_call` and :func:`probes`.  Adding a capability is one entry
here plus its test.  Activation and dtype names come from the spec.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from convlstm_conformance.model import Case, Refused

SET, BOOL = "set", "bool"


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _kernel(case: Case) -> tuple[int, int]:
    return _pair(case.config["kernel_size"])


@dataclass(frozen=True)
class Probe:
    """A case that needs one feature: argument values to focus on, keyword
    arguments of ``make_case`` and the dtype (None: one the adapter claims)."""

    focus: Mapping[str, list] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    dtype: str | None = None


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str                                   # SET or BOOL
    doc: str
    needs: Callable[[Case], Any]                # what a case requires
    default: Any = None                         # the claim of an adapter that says nothing
    covers: tuple[str, ...] = ()                # spec or call arguments it is about
    admits: Callable[[Any, Any], bool] | None = None   # (claim, argument value) -> allowed
    call_options: tuple[str, ...] = ()          # make_case options needing it
    probes: Mapping[Any, Probe] = field(default_factory=dict)   # value (True for bool) -> Probe

    def claimed(self, claim: Any, value: Any) -> bool:
        """Whether ``claim`` (this feature's entry in Capabilities) covers a
        case needing ``value``."""
        if self.kind == SET:
            return value in claim
        return bool(claim) or not value


# --------------------------------------------------------------------------
# The table

FEATURES: tuple[Feature, ...] = (
    Feature("padding", SET, "padding modes run",
            needs=lambda c: str(c.config.get("padding", "valid")).lower(),
            default=frozenset({"valid", "same"}), covers=("padding",),
            admits=lambda claim, v: str(v).lower() in claim,
            probes={"valid": Probe({"padding": ["valid"]}), "same": Probe({"padding": ["same"]})}),
    Feature("data_format", SET, "data layouts run",
            needs=lambda c: c.config.get("data_format") or "channels_last",
            default=frozenset({"channels_last", "channels_first"}), covers=("data_format",),
            admits=lambda claim, v: (v or "channels_last") in claim,
            probes={"channels_first": Probe({"data_format": ["channels_first"]})}),
    Feature("activation", SET, "names of `activation` computed (None: linear)",
            needs=lambda c: c.config.get("activation", "tanh") or "linear",
            default=frozenset(), covers=("activation",), admits=lambda claim, v: v in claim,
            probes={"relu": Probe({"activation": ["relu"]}),
                    "hard_sigmoid": Probe({"activation": ["hard_sigmoid"]})}),
    Feature("recurrent_activation", SET, "names of `recurrent_activation` computed",
            needs=lambda c: c.config.get("recurrent_activation", "sigmoid") or "linear",
            default=frozenset(), covers=("recurrent_activation",),
            admits=lambda claim, v: v in claim,
            probes={"hard_sigmoid": Probe({"recurrent_activation": ["hard_sigmoid"]})}),
    Feature("dtype", SET, "dtypes (float formats and mixed policies) the layer is built with",
            needs=lambda c: c.dtype, default=frozenset({"float32"}),
            probes={"float64": Probe(dtype="float64"), "float16": Probe(dtype="float16")}),
    Feature("device", SET, "devices run on (the suite's `device` config key)",
            needs=lambda c: c.config.get("device", "cpu"), default=frozenset({"cpu"})),
    Feature("kernel_parity", SET, "odd and/or even kernel extents",
            needs=lambda c: "even" if any(k % 2 == 0 for k in _kernel(c)) else "odd",
            default=frozenset({"odd", "even"}), covers=("kernel_size",),
            admits=lambda claim, v: (("even" in claim or all(k % 2 for k in _pair(v)))
                                     and ("odd" in claim or not all(k % 2 for k in _pair(v)))),
            probes={"even": Probe({"kernel_size": [2, [2, 2]]})}),
    Feature("strides", BOOL, "strides > 1",
            needs=lambda c: max(_pair(c.config.get("strides", 1))) > 1, default=True,
            covers=("strides",), admits=lambda claim, v: claim or max(_pair(v)) == 1,
            probes={True: Probe({"strides": [2, [2, 1]], "dilation_rate": [1]})}),
    Feature("dilation", BOOL, "dilation_rate > 1",
            needs=lambda c: max(_pair(c.config.get("dilation_rate", 1))) > 1, default=True,
            covers=("dilation_rate",), admits=lambda claim, v: claim or max(_pair(v)) == 1,
            probes={True: Probe({"dilation_rate": [2, [1, 2]], "strides": [1]})}),
    Feature("no_bias", BOOL, "use_bias=False",
            needs=lambda c: not c.config.get("use_bias", True), default=True,
            covers=("use_bias",), admits=lambda claim, v: claim or v,
            probes={True: Probe({"use_bias": [False]})}),
    Feature("non_square", BOOL, "kernels of unequal height and width",
            needs=lambda c: len(set(_kernel(c))) > 1, default=True, covers=("kernel_size",),
            admits=lambda claim, v: claim or len(set(_pair(v))) == 1,
            probes={True: Probe({"kernel_size": [[1, 3], [3, 1]]})}),
    Feature("return_state", BOOL, "return_state=True",
            needs=lambda c: bool(c.config.get("return_state", False)), default=True,
            covers=("return_state",), admits=lambda claim, v: claim or not v,
            probes={True: Probe({"return_state": [True]})}),
    Feature("return_sequences", BOOL, "return_sequences=True",
            needs=lambda c: bool(c.config.get("return_sequences", False)), default=True,
            covers=("return_sequences",), admits=lambda claim, v: claim or not v),
    Feature("go_backwards", BOOL, "go_backwards=True",
            needs=lambda c: bool(c.config.get("go_backwards", False)), default=False,
            covers=("go_backwards",), admits=lambda claim, v: claim or not v,
            probes={True: Probe({"go_backwards": [True]})}),
    Feature("mask", BOOL, "the call's `mask` argument",
            needs=lambda c: c.mask is not None, default=False, covers=("mask",),
            call_options=("mask",), probes={True: Probe(options={"mask": "random"})}),
    Feature("initial_state", BOOL, "the call's `initial_state` argument",
            needs=lambda c: c.initial_state is not None, default=False,
            covers=("initial_state",), call_options=("initial_state",),
            probes={True: Probe(options={"initial_state": True})}),
    Feature("stateful", BOOL, "stateful=True: state carried across calls, reset_states()",
            needs=lambda c: bool(c.config.get("stateful", False)) or bool(c.followups),
            default=False, covers=("stateful",), call_options=("followups",)),
    Feature("dropout", BOOL, "dropout and recurrent_dropout in training, drawn by the layer",
            needs=lambda c: bool(c.training and (c.config.get("dropout", 0)
                                                 or c.config.get("recurrent_dropout", 0)) > 0),
            default=False, covers=("dropout", "recurrent_dropout", "training")),
    Feature("dropout_injection", BOOL, "dropout masks given by the suite (Case.dropout_mask)",
            needs=lambda c: c.dropout_mask is not None or c.recurrent_dropout_mask is not None,
            default=False, call_options=("dropout_masks",)),
    Feature("gradients", BOOL, "gradients of sum(output * cotangent)",
            needs=lambda c: c.cotangent is not None, default=False),
    Feature("argument_validation", BOOL,
            "raises the spec's documented errors for invalid configurations",
            needs=lambda c: False, default=False),
    Feature("masking_layer", BOOL, "a mask computed by an upstream Masking layer",
            needs=lambda c: c.masking_value is not None, default=False,
            call_options=("masking_layer",)),
    Feature("serialization", BOOL, "get_config/from_config and model save/load",
            needs=lambda c: bool(c.roundtrip), default=False, call_options=("roundtrip",)),
    Feature("mixed_precision", BOOL, "Keras mixed-precision policies (mixed_float16, ...)",
            needs=lambda c: is_policy(c.dtype), default=False),
    Feature("symbolic_shapes", BOOL, "built for input shapes with unknown (None) dimensions",
            needs=lambda c: bool(c.unknown_dims), default=False, call_options=("symbolic",)),
)

BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


# --------------------------------------------------------------------------
# Names from the spec


@functools.lru_cache(maxsize=None)
def _default_spec():
    from convlstm_conformance.spec import load_cached
    return load_cached()


def activations(spec=None) -> frozenset:
    """Every activation name the spec documents (the domain of `activation`)."""
    return frozenset((spec or _default_spec()).values("activation"))


def dtypes(spec=None) -> tuple[str, ...]:
    """Every dtype the spec lists: float formats and mixed-precision policies."""
    return tuple((spec or _default_spec()).dtypes)


def formats(spec=None) -> tuple[str, ...]:
    """The float formats the spec lists (dtypes that are not policies)."""
    return (spec or _default_spec()).formats()


def is_policy(dtype: str, spec=None) -> bool:
    """Whether ``dtype`` names a mixed-precision policy rather than a format."""
    d = (spec or _default_spec()).dtypes.get(dtype)
    return bool(d and d.policy)


def compute_format(dtype: str, spec=None) -> str:
    """The float format a dtype computes in (a policy's half format)."""
    d = (spec or _default_spec()).dtypes.get(dtype)
    return d.computes_in if d is not None else dtype


# --------------------------------------------------------------------------
# Capabilities, derived from the table


class Capabilities:
    """What part of the spec an adapter implements: one claim per feature.

    ``Capabilities(mask=True, activation={"tanh", "sigmoid"})``; features not
    named take their default from :data:`FEATURES`.  Set-valued claims are
    frozensets, the others booleans.
    """

    __slots__ = ("_claims",)

    def __init__(self, **claims: Any):
        unknown = sorted(set(claims) - set(BY_NAME))
        if unknown:
            raise ValueError(f"unknown capability names: {unknown}; known: {sorted(BY_NAME)}")
        values = {}
        for f in FEATURES:
            value = claims.get(f.name, f.default)
            values[f.name] = frozenset(value) if f.kind == SET else bool(value)
        object.__setattr__(self, "_claims", values)

    def __getattr__(self, name: str) -> Any:
        try:
            return object.__getattribute__(self, "_claims")[name]
        except KeyError:
            raise AttributeError(f"no capability {name!r}; known: {sorted(BY_NAME)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Capabilities are immutable; use replace()")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Capabilities) and self._claims == other._claims

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._claims.items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        changed = {k: v for k, v in self._claims.items() if v != _normal_default(BY_NAME[k])}
        return "Capabilities(" + ", ".join(f"{k}={v!r}" for k, v in changed.items()) + ")"

    def replace(self, **claims: Any) -> "Capabilities":
        return Capabilities(**{**self._claims, **claims})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in FEATURES:
            value = self._claims[f.name]
            out[f.name] = (sorted(value, key=lambda v: (v is None, str(v))) if f.kind == SET
                           else value)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Capabilities":
        if not isinstance(data, Mapping):
            raise ValueError(f"capabilities must be a JSON object, got {type(data).__name__}")
        for name, value in data.items():
            f = BY_NAME.get(name)
            if f is None:
                continue        # reported by __init__ with the known names
            if f.kind == SET and not isinstance(value, (list, tuple, set, frozenset)):
                raise ValueError(f"capability {name!r} must be a list of values, got {value!r}")
            if f.kind == BOOL and not isinstance(value, bool):
                raise ValueError(f"capability {name!r} must be true or false, got {value!r}")
        return cls(**dict(data))

    def missing(self, needs: Mapping[str, Any]) -> list[str]:
        """The features in ``needs`` (from :func:`required_features`) not claimed."""
        gaps = []
        for name, value in needs.items():
            f = BY_NAME[name]
            if not f.claimed(self._claims[name], value):
                gaps.append(f"{name}={value}" if f.kind == SET else name)
        return gaps

    def covers(self, case_or_needs: "Case | Mapping[str, Any]") -> bool:
        needs = (required_features(case_or_needs) if isinstance(case_or_needs, Case)
                 else case_or_needs)
        return not self.missing(needs)


def _normal_default(f: Feature) -> Any:
    return frozenset(f.default) if f.kind == SET else bool(f.default)


def required_features(case: Case) -> dict[str, Any]:
    """The value each feature takes in ``case`` (for a bool: whether it is used)."""
    return {f.name: f.needs(case) for f in FEATURES}


def restrictions(caps: Capabilities | None) -> dict[str, Callable[[Any], bool]]:
    """Per spec argument, a predicate keeping drawn values inside ``caps``:
    the conjunction of the ``admits`` of every feature covering it."""
    if caps is None:
        return {}
    by_arg: dict[str, list[Feature]] = {}
    for f in FEATURES:
        if f.admits is not None:
            for arg in f.covers:
                by_arg.setdefault(arg, []).append(f)

    def predicate(features: list[Feature]) -> Callable[[Any], bool]:
        return lambda v: all(f.admits(getattr(caps, f.name), v) for f in features)
    return {arg: predicate(fs) for arg, fs in by_arg.items()}


def feature_for_call(option: str) -> Feature | None:
    """The feature a clause's call option (``call:`` in the spec) needs."""
    for f in FEATURES:
        if option in f.call_options:
            return f
    return None


def probes(caps: Capabilities) -> Iterator[tuple[str, Feature, Any, Probe]]:
    """(label, feature, value, probe) for every probe of an unclaimed feature
    value: ``padding=same`` for a set feature, ``mask`` for a bool one."""
    for f in FEATURES:
        claim = getattr(caps, f.name)
        for value, probe in f.probes.items():
            if f.kind == SET and value not in claim:
                yield f"{f.name}={value}", f, value, probe
            elif f.kind == BOOL and not claim:
                yield f.name, f, value, probe


def widened(caps: Capabilities, feature: Feature, value: Any) -> Capabilities:
    """``caps`` with one more value (or one more bool feature) claimed."""
    if feature.kind == SET:
        return caps.replace(**{feature.name: getattr(caps, feature.name) | {value}})
    return caps.replace(**{feature.name: True})


def refuse_unless_mappable(case: Case, caps: Capabilities) -> None:
    """Raise Refused for a case a weight-mapping adapter cannot run: outside
    its claims, without weights to map, or without a time step."""
    missing = caps.missing(required_features(case))
    if missing:
        raise Refused("outside capabilities: " + ", ".join(missing))
    if case.kernel is None or case.recurrent_kernel is None:
        raise Refused("the case carries no weights to map")
    if case.config.get("use_bias", True) and case.bias is None:
        raise Refused("use_bias is set but the case carries no bias")
    if np.ndim(case.inputs) != 5 or np.shape(case.inputs)[1] < 1:
        raise Refused(f"needs 5-D inputs with at least one step, got {np.shape(case.inputs)}")
