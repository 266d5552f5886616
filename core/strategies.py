"""Configurations and cases drawn from the spec, constructively.

Valid configurations are built argument by argument in the spec's order, each
drawn from its ``draw`` range whose bounds are expressions over what was drawn
before (dilation is drawn above 1 only when strides stayed 1; rows start at the
smallest extent giving an output).  So a valid draw satisfies every clause by
construction, not by throwing draws away; :func:`rejection_rate` measures it.

An invalid configuration for clause X is drawn the same way except that the
names X breaks are drawn from X's ``break`` recipe; everything drawn after them
adapts (their bounds read the broken values), so X is the one clause it
violates.  Nothing is filtered: a draw that breaks the promise raises
:class:`ConstructionError` (``configs``, ``invalid_configs``).

One code path serves two drivers: Hypothesis (``draw``) for the suite and a
NumPy generator for measurements and benchmarks.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from convlstm_conformance.expr import Expr, ExprError
from convlstm_conformance.features import Capabilities, compute_format, restrictions
from convlstm_conformance.model import Call, Case
from convlstm_conformance.spec import PROBE_DEFAULTS, Clause, Range, Spec, resolve

SMALL, BIG = "small", "big"


@dataclass
class Drawn:
    """A configuration plus input dimensions, before arrays are made."""

    config: dict[str, Any]
    dims: dict[str, int]
    input_rank: int = 5
    broken: str | None = None      # the clause an invalid draw breaks
    probes: dict[str, Any] = field(default_factory=dict)   # see spec.PROBE_DEFAULTS

    def key(self) -> str:
        text = repr((sorted(self.config.items(), key=str), sorted(self.dims.items()),
                     self.input_rank, sorted(self.probes.items())))
        return hashlib.sha1(text.encode()).hexdigest()[:10]


class Chooser:
    """The source of choices: Hypothesis's ``draw`` or a NumPy generator."""

    def __init__(self, draw: Callable | None = None, rng: np.random.Generator | None = None):
        self._draw, self._rng = draw, rng

    def integer(self, lo: int, hi: int, label: str) -> int:
        if self._draw is not None:
            from hypothesis import strategies as st
            return self._draw(st.integers(lo, hi), label=label)
        return int(self._rng.integers(lo, hi + 1))

    def pick(self, values: Sequence[Any], label: str) -> Any:
        if self._draw is not None:
            from hypothesis import strategies as st
            return self._draw(st.sampled_from(list(values)), label=label)
        return values[int(self._rng.integers(0, len(values)))]


# --------------------------------------------------------------------------
# Drawing


def _bound_names(rng_: Range | None) -> frozenset:
    if rng_ is None:
        return frozenset()
    return frozenset().union(*(b.names for b in (rng_.min, rng_.max, rng_.big_max)
                               if isinstance(b, Expr)))


def _candidates(rng_: Range, env: Mapping[str, Any], size: str) -> tuple[list | None, int, int]:
    if rng_.values is not None:
        return list(rng_.values), 0, 0
    lo = resolve(rng_.min, env)
    hi = resolve(rng_.big_max if size == BIG and rng_.big_max is not None else rng_.max, env)
    return None, int(lo), int(hi)


def _draw_value(ch: Chooser, name: str, kind: str, rng_: Range, env: Mapping[str, Any],
                size: str, allowed: Callable[[Any], bool] | None) -> Any:
    values, lo, hi = _candidates(rng_, env, size)
    if values is not None:
        if allowed is not None:
            values = [v for v in values if allowed(v)]
            if not values:
                raise Unsatisfiable(f"no value of {name} inside the adapter's capabilities")
        return ch.pick(values, name)
    if hi < lo:
        raise Unsatisfiable(f"empty range for {name}: [{lo}, {hi}]")
    if kind == "int_pair":
        for _ in range(8):
            a, b = ch.integer(lo, hi, f"{name}[0]"), ch.integer(lo, hi, f"{name}[1]")
            value: Any = a if a == b else (a, b)
            if allowed is None or allowed(value):
                return value
        # Fall back to the values the predicate admits.
        options = [v for v in itertools.product(range(lo, hi + 1), repeat=2) if allowed(v)]
        if not options:
            raise Unsatisfiable(f"no value of {name} inside the adapter's capabilities")
        a, b = ch.pick(options, name)
        return a if a == b else (a, b)
    if kind == "float":
        return float(ch.integer(int(lo * 100), int(hi * 100), name)) / 100.0
    return ch.integer(lo, hi, name)


class Unsatisfiable(Exception):
    """The requested focus and capabilities leave nothing to draw."""


def draw_config(ch: Chooser, spec: Spec, *, size: str = SMALL,
                focus: Mapping[str, Sequence[Any]] | None = None,
                sizes: Mapping[str, int] | None = None,
                caps: Capabilities | None = None,
                breaking: Clause | None = None) -> Drawn:
    """Draw one configuration; with ``breaking``, one that breaks that clause."""
    focus = dict(focus or {})
    allowed = restrictions(caps)
    breaks = dict(breaking.breaks) if breaking else {}
    config: dict[str, Any] = {}
    for arg in spec.arguments.values():
        if arg.type == "input" or arg.phase != "constructor":
            continue
        names = _bound_names(breaks.get(arg.name, arg.draw))
        env = spec.environment(config, only=names) if names else {}
        if arg.name in breaks:
            config[arg.name] = _draw_value(ch, arg.name, arg.type, breaks[arg.name], env, size, None)
        elif arg.name in focus:
            vals = [v for v in focus[arg.name] if allowed.get(arg.name, lambda _: True)(v)]
            if not vals:
                raise Unsatisfiable(f"{arg.name}: none of {list(focus[arg.name])} is claimed")
            config[arg.name] = ch.pick(vals, arg.name)
        elif arg.draw is not None:
            config[arg.name] = _draw_value(ch, arg.name, arg.type, arg.draw, env, size,
                                           allowed.get(arg.name))
    inputs = next(a for a in spec.arguments.values() if a.type == "input")
    dims: dict[str, int] = {}
    for dim, rng_ in inputs.dims.items():
        env = spec.environment(config, dims, only=_bound_names(breaks.get(dim, rng_)))
        if dim in breaks:
            dims[dim] = _draw_value(ch, dim, "int", breaks[dim], env, size, None)
        elif sizes and dim in sizes:
            dims[dim] = int(sizes[dim])
        else:
            dims[dim] = _draw_value(ch, dim, "int", rng_, env, size, None)
    rank = inputs.rank or 5
    if "input_rank" in breaks:
        rank = _draw_value(ch, "input_rank", "int", breaks["input_rank"], {}, size, None)
    probes = {name: _draw_value(ch, name, "enum", breaks[name], {}, size, None)
              for name in PROBE_DEFAULTS if name in breaks}
    return Drawn(config, dims, rank, breaking.id if breaking else None, probes)


def check(spec: Spec, drawn: Drawn) -> bool:
    """A valid draw violates nothing; an invalid one violates exactly its clause."""
    try:
        violated = spec.violations(drawn.config, drawn.dims, drawn.input_rank, drawn.probes)
    except ExprError:
        return False
    return violated == ([drawn.broken] if drawn.broken else [])


def focus_for(spec: Spec, clause: Clause) -> dict[str, list]:
    """Argument values that make ``clause.when`` hold, found by enumeration.

    The arguments read by the condition (directly or through derived names)
    that are drawn from finite value lists are enumerated; the combinations that
    satisfy the condition become the focus.  Conditions here read a handful of
    booleans and enums, so the product stays tiny.
    """
    focus = {k: list(v) for k, v in clause.focus.items()}
    if clause.when is None:
        return focus
    needed = spec.depends_on(clause.when)
    finite = [a for a in spec.arguments.values()
              if a.name in needed and a.draw is not None and a.draw.values is not None]
    combos = []
    for values in itertools.product(*(a.draw.values for a in finite)):
        cfg = dict(zip((a.name for a in finite), values))
        try:
            if clause.when(spec.environment(cfg)):
                combos.append(cfg)
        except ExprError:
            continue
    if not combos:
        raise Unsatisfiable(f"{clause.id}: no drawable values satisfy {clause.when.source!r}")
    for a in finite:
        focus[a.name] = sorted({c[a.name] for c in combos}, key=repr)
    return focus


# --------------------------------------------------------------------------
# Arrays

class ScaleError(ValueError):
    """A scale knob set to something that is not a positive number."""


def _positive(name: str, text: str, default):
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        vals = tuple(float(v) for v in raw.split(","))
    except ValueError:
        raise ScaleError(f"{name}={raw!r}: expected positive numbers separated by commas") from None
    if not vals or not all(np.isfinite(v) and v > 0 for v in vals):
        raise ScaleError(f"{name}={raw!r}: every value must be a finite number above 0")
    if isinstance(default, tuple):
        return vals
    if len(vals) != 1:
        raise ScaleError(f"{name}={raw!r}: {text} is one number")
    return type(default)(vals[0])


@dataclass(frozen=True)
class Scales:
    """How large the drawn values are: the knobs, and their defaults.

    * ``weights`` (``CONVLSTM_WEIGHT_SCALES``): multipliers of the Glorot scale
      drawn for each case's kernels.  0.1 keeps every gate in its linear middle,
      2 reaches the bends of tanh and sigmoid.
    * ``inputs`` (``CONVLSTM_INPUT_SCALE``): inputs and given states are
      uniform in [-inputs, inputs].
    * ``boundary_weights`` (``CONVLSTM_BOUNDARY_SCALE``): the weight multiplier
      of each search's saturated boundary example (harness.boundary_examples).
      At 8 times Glorot a tenth to a fifth of the gates' arguments lie in
      sigmoid's |x| > 5 tails, a quarter of the forget gates are shut and a
      quarter wide open, and relu6, hard_silu and hard_swish reach their far
      pieces.  Three steps long: with an unbounded activation, weights this
      large make the recurrence grow without end over longer sequences.
    * ``long_timesteps`` (``CONVLSTM_LONG_TIMESTEPS``): the length of each
      search's long boundary example, at weight scale 1: twelve steps carry
      the state and deepen backpropagation through time where the random
      draws stop at four.

    The tolerance model's budgets follow the values (core/tolerance.py), so
    larger scales judge as strictly as small ones; benchmarks/coverage.py
    measures what a setting reaches.
    """

    weights: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0)
    inputs: float = 1.0
    boundary_weights: float = 8.0
    long_timesteps: int = 12

    @classmethod
    def from_environment(cls) -> "Scales":
        d = cls()
        return cls(weights=_positive("CONVLSTM_WEIGHT_SCALES", "", d.weights),
                   inputs=_positive("CONVLSTM_INPUT_SCALE", "the input scale", d.inputs),
                   boundary_weights=_positive("CONVLSTM_BOUNDARY_SCALE", "the boundary scale",
                                              d.boundary_weights),
                   long_timesteps=max(1, int(_positive(
                       "CONVLSTM_LONG_TIMESTEPS", "the long length", float(d.long_timesteps)))))


@functools.lru_cache(maxsize=None)
def scales() -> Scales:
    """The knobs of this process, read once (raises ScaleError; the pytest
    plugin turns it into a usage error before anything is drawn)."""
    return Scales.from_environment()


def round_to(a: np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` and back, so every implementation
    starts from exactly the same numbers."""
    if dtype == "bfloat16":
        import ml_dtypes
        return a.astype(ml_dtypes.bfloat16).astype(np.float64)
    return a.astype(dtype).astype(np.float64)


def input_shape(spec: Spec, drawn: Drawn) -> tuple[int, ...]:
    env = spec.environment(drawn.config, drawn.dims)
    shape = tuple(env["input_shape"])
    if drawn.input_rank < 5:
        return shape[:drawn.input_rank]
    return shape + (1,) * (drawn.input_rank - 5)


def make_case(spec: Spec, drawn: Drawn, seed: int, *, dtype: str = "float32",
              scale: float = 0.5, initial_state: bool = False, mask: bool | str = False,
              cotangent: bool = False, weights: bool = True, masking_layer: bool = False,
              followups: int = 0, reset: bool = False, followup_state: bool = False,
              roundtrip: str = "", training: bool = False, dropout_masks: bool = False,
              symbolic: bool = False) -> Case:
    """Arrays for a drawn configuration, from a seeded generator.

    ``weights=False`` leaves the weights to the layer's own initializers: an
    invalid configuration must be judged on what the layer does with it, not on
    weights the suite could not have shaped for it.
    """
    rng = np.random.default_rng(seed)
    env = spec.environment(drawn.config, drawn.dims, drawn.input_rank, drawn.probes)
    # Mixed policies compute in the half format: give values exact there.
    fmt = compute_format(dtype, spec)
    filters = drawn.config["filters"]
    F = filters if isinstance(filters, int) and filters > 0 else 1
    kernel = spec.normalize("kernel_size", drawn.config["kernel_size"])
    kh, kw = (max(int(k), 1) for k in (tuple(kernel) + (1, 1))[:2])
    C = drawn.dims["channels"]

    def uniform(shape, s):
        return round_to(rng.uniform(-s, s, size=shape), fmt)

    amp = scales().inputs

    # Glorot-like scale keeps pre-activations O(1) whatever the fan-in; the
    # drawn multiplier pushes gates into saturation now and then.
    fan = kh * kw * (C + F)
    wscale = scale * np.sqrt(6.0 / fan)
    case = Case(config=dict(drawn.config), inputs=uniform(input_shape(spec, drawn), amp),
                kernel=uniform((kh, kw, C, 4 * F), wscale),
                recurrent_kernel=uniform((kh, kw, F, 4 * F), wscale),
                bias=uniform((4 * F,), 0.5) if drawn.config.get("use_bias", True) else None,
                dtype=dtype, case_id=f"{drawn.key()}-{seed}")
    if not weights:
        case.kernel = case.recurrent_kernel = case.bias = None
    case.training = bool(training)
    state_shape = tuple(env.get("state_shape", ()))
    if env["state_error"] != "none" and state_shape:
        initial_state = True
        state_shape = _corrupt_state_shape(state_shape, env["state_error"], case.channels_first)
    if initial_state and state_shape:
        case.initial_state = (uniform(state_shape, amp), uniform(state_shape, amp))
    B, T = drawn.dims["batch"], drawn.dims["timesteps"]
    if mask == "leading":
        # Every row starts with a run of masked steps, some rows all masked but one.
        lead = rng.integers(1, max(T, 2), size=B)
        case.mask = np.arange(T)[None, :] >= np.minimum(lead, T - 1)[:, None]
    elif mask:
        case.mask = rng.random((B, T)) < 0.7
    if masking_layer:
        # Whole frames equal to the mask value mark padded steps, as users pad.
        case.masking_value = 0.0
        pad = rng.random((B, T)) < 0.3
        case.inputs[pad] = 0.0
    case.roundtrip = roundtrip
    if symbolic and env["unknown_dim"] != "none":
        case.unknown_dims = [env["unknown_dim"]]
    if dropout_masks and training and state_shape:
        # One mask per gate, fixed for the whole call, scaled for inverted dropout.
        def masks(rate, shape):
            keep = rng.random((4,) + shape) >= rate
            return round_to(np.where(keep, 1.0 / (1.0 - rate), 0.0), fmt)
        cl = case.channels_first
        in_shape = case.inputs.shape
        frame = (in_shape[0],) + ((in_shape[3], in_shape[4], in_shape[2]) if cl else in_shape[2:])
        sshape = (state_shape[0],) + ((state_shape[2], state_shape[3], state_shape[1]) if cl
                                      else state_shape[1:])
        case.dropout_mask = masks(float(drawn.config.get("dropout", 0.0)), frame)
        case.recurrent_dropout_mask = masks(float(drawn.config.get("recurrent_dropout", 0.0)), sshape)
    for k in range(followups):
        batch = B + 1 if env["followup_batch"] == "other" else B
        shape = (batch,) + case.inputs.shape[1:]
        state = None
        if followup_state and state_shape:
            state = (uniform((batch,) + state_shape[1:], amp),
                     uniform((batch,) + state_shape[1:], amp))
        case.followups.append(Call(uniform(shape, amp), reset=reset, initial_state=state))
    if cotangent and "sequence_shape" in env:
        shape = env["sequence_shape"] if drawn.config.get("return_sequences") else env["state_shape"]
        case.cotangent = uniform(shape, 1.0)
    return case


def _corrupt_state_shape(shape: tuple, how: str, channels_first: bool) -> tuple:
    """A state shape wrong in one documented way (clause INITIAL-STATE-SHAPE)."""
    shape = list(shape)
    if how == "rows":
        shape[2 if channels_first else 1] += 1
    elif how == "filters":
        shape[1 if channels_first else 3] += 1
    elif how == "rank":
        shape = shape[1:]
    return tuple(shape)


# --------------------------------------------------------------------------
# Hypothesis strategies


class ConstructionError(AssertionError):
    """A draw the construction promised valid (or breaking exactly one
    clause) is not: the spec's draw ranges and its clauses disagree."""


def _constructed(spec: Spec, drawn: Drawn) -> Drawn:
    """``drawn`` itself, checked: never filtered, so a spec edit that breaks
    the construction fails loudly instead of thinning the draws unseen."""
    try:
        violated = spec.violations(drawn.config, drawn.dims, drawn.input_rank, drawn.probes)
    except ExprError as exc:
        raise ConstructionError(f"{spec.path}: a clause cannot be evaluated on the drawn "
                                f"configuration {drawn.config}, dims {drawn.dims}: {exc}") from None
    want = [drawn.broken] if drawn.broken else []
    if violated != want:
        raise ConstructionError(
            f"{spec.path}: the construction drew {drawn.config}, dims {drawn.dims}, which "
            f"breaks {violated or 'no clause'} where it should break {want or 'none'}")
    return drawn


def fixed_config(spec: Spec, rng: np.random.Generator, tries: int = 20, **kwargs) -> Drawn | None:
    """A valid configuration drawn with a NumPy generator (draw_config's
    keywords), checked as ``configs`` checks; None when ``tries`` draws in a
    row cannot satisfy the focus and sizes asked for."""
    for _ in range(tries):
        try:
            return _constructed(spec, draw_config(Chooser(rng=rng), spec, **kwargs))
        except (ConstructionError, Unsatisfiable):
            continue
    return None


def configs(spec: Spec, **kwargs):
    """Hypothesis strategy of valid :class:`Drawn` configurations."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw):
        return _constructed(spec, draw_config(Chooser(draw=draw), spec, **kwargs))
    return strategy()


def invalid_configs(spec: Spec, clause: Clause, **kwargs):
    """Hypothesis strategy of configurations breaking exactly ``clause``."""
    from hypothesis import strategies as st

    @st.composite
    def strategy(draw):
        return _constructed(spec, draw_config(Chooser(draw=draw), spec, breaking=clause,
                                              **kwargs))
    return strategy()


def seeds():
    from hypothesis import strategies as st
    return st.integers(0, 2 ** 32 - 1)


# --------------------------------------------------------------------------
# Measurement


@dataclass
class RejectionStats:
    drawn: int = 0
    kept: int = 0
    by_clause: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return 1.0 - self.kept / self.drawn if self.drawn else 0.0


def rejection_rate(spec: Spec, n: int = 1000, seed: int = 0, breaking: Clause | None = None,
                   size: str = SMALL) -> RejectionStats:
    """Fraction of draws the validity check would throw away."""
    rng = np.random.default_rng(seed)
    stats = RejectionStats()
    for _ in range(n):
        drawn = draw_config(Chooser(rng=rng), spec, breaking=breaking, size=size)
        stats.drawn += 1
        stats.kept += check(spec, drawn)
    return stats
