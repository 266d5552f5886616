"""Which implementations exist, whether they are installed, and how to start them.

Every implementation, ours and a third party's alike, is found through the
entry-point group ``convlstm_conformance.adapters``.  An entry point names
either an :class:`AdapterEntry` (everything the suite needs to know about an
implementation, declared beside its adapter) or an Adapter class or factory,
which gets an entry with the defaults.  Ours are declared in this
distribution's ``pyproject.toml``; a third party declares its own::

    [project.entry-points."convlstm_conformance.adapters"]
    mylstm = "mypkg.conformance:MyAdapter"

Listing is cheap: adapter modules import their frameworks lazily, and
availability is decided without importing any framework (``find_spec`` only).
Implementations can also be named for one run, in-process
(``--adapter-object package.module:factory``) or out-of-process
(``--adapter-command "name=CMD ..."``, the worker protocol of
``docs/worker-protocol.md``).

Workers' limits (per-request timeout, start-up timeout, memory of the process
tree) come from :func:`worker_options`: the caller's values, else the
environment variables CONVLSTM_WORKER_TIMEOUT, CONVLSTM_WORKER_START_TIMEOUT and
CONVLSTM_WORKER_MEMORY_MB, else the defaults of docs/limits.md.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import math
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from convlstm_conformance.model import ADAPTER_ERROR, Adapter, Outcome, outcome_problem

if TYPE_CHECKING:    # the worker module imports this one
    from convlstm_conformance.worker import WorkerOptions

GROUP = "convlstm_conformance.adapters"


@dataclass(frozen=True)
class AdapterEntry:
    """Everything about one implementation the suite needs before running it."""

    name: str
    target: str                      # "module:attr": an Adapter class or factory
    kwargs: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()   # modules that must be importable
    isolate: bool = False            # run in a worker process
    env: dict[str, str] = field(default_factory=dict)   # for the worker process
    needs_gpu: bool = False
    # Share of each test's examples this adapter gets: implementations that
    # compile every new configuration (XLA) cost seconds per case.
    example_share: float = 1.0
    # Cases (fresh weights and inputs) each numerics and gradients example
    # runs on its configuration.  For the compiling adapters a configuration
    # costs ~0.3 s and each further case a few milliseconds, so every
    # compilation buys several data draws (benchmarks/README.md, throughput).
    data_per_example: int = 1
    # "module:function" writing a standalone script that shows a case's
    # divergence with the framework alone (adapters/snippets.py); "" for none.
    snippet: str = ""

    def available(self) -> tuple[bool, str]:
        missing = [m for m in self.requires if not _importable(m)]
        if missing:
            return False, f"not installed: {', '.join(missing)}"
        if self.needs_gpu and not gpu_present():
            return False, "no NVIDIA GPU on this machine"
        return True, ""

    def create(self, options: "WorkerOptions | None" = None) -> Adapter:
        """Instantiate: in a worker process when ``isolate`` (with ``options``,
        default :func:`worker_options`), else guarded in-process."""
        if self.isolate:
            from convlstm_conformance.worker import WorkerAdapter
            opts = options or worker_options()
            return WorkerAdapter(self.name, self.target, self.kwargs, env=self.env,
                                 timeout_s=opts.timeout_s, start_timeout_s=opts.start_timeout_s,
                                 memory_limit_mb=opts.memory_limit_mb)
        adapter = instantiate(self.target, self.kwargs)
        if adapter.name != self.name:
            raise ValueError(f"{self.target} calls itself {adapter.name!r}, but its entry "
                             f"registers it as {self.name!r}")
        return Guarded(adapter)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


#: Cases per numerics and gradients example for adapters that compile every
#: new configuration (see AdapterEntry.data_per_example).
COMPILED_DATA = 3


def gpu_present() -> bool:
    """An NVIDIA GPU is visible (cheap check: no framework import)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


@functools.lru_cache(maxsize=1)
def discover() -> tuple[tuple[AdapterEntry, ...], tuple[tuple[str, str], ...]]:
    """Every registered entry, and (name, why) for entry points that are broken."""
    from importlib.metadata import entry_points
    entries: list[AdapterEntry] = []
    broken: list[tuple[str, str]] = []
    seen: set[str] = set()
    for ep in entry_points(group=GROUP):
        if ep.name in seen:
            broken.append((ep.name, f"registered twice (again by {ep.value})"))
            continue
        seen.add(ep.name)
        try:
            obj = ep.load()
        except Exception as exc:   # a third party's broken module must not hide the rest
            broken.append((ep.name, f"cannot load {ep.value}: {type(exc).__name__}: {exc}"))
            continue
        if isinstance(obj, AdapterEntry):
            if obj.name != ep.name:
                broken.append((ep.name, f"{ep.value} declares the name {obj.name!r}"))
                continue
            entries.append(obj)
        elif callable(obj):
            entries.append(AdapterEntry(ep.name, ep.value))
        else:
            broken.append((ep.name, f"{ep.value} is neither an AdapterEntry nor an Adapter "
                                    f"class or factory"))
    return tuple(entries), tuple(broken)


def entries() -> tuple[AdapterEntry, ...]:
    return discover()[0]


def known(name: str) -> AdapterEntry:
    for entry in entries():
        if entry.name == name:
            return entry
    raise KeyError(f"unknown adapter {name!r}; known: {', '.join(e.name for e in entries())}")


def installed() -> list[str]:
    """Registered adapters runnable here."""
    return [e.name for e in entries() if e.available()[0]]


def instantiate(target: str, kwargs: dict[str, Any] | None = None) -> Adapter:
    """``module:attr`` called with ``kwargs``: an Adapter class or factory."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"adapter target must be 'module:attr', got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    adapter = obj(**(kwargs or {}))
    if not isinstance(adapter, Adapter):
        raise TypeError(f"{target} did not produce an Adapter, got {type(adapter).__name__}")
    return adapter


def from_object(path: str) -> Adapter:
    """An in-process third-party adapter named ``module:attr`` (class or factory)."""
    return Guarded(instantiate(path, {}))


def _parse_command(spec: str) -> tuple[str, list[str]]:
    """(NAME, argv) of ``NAME=COMMAND ARGS...``."""
    import shlex
    name, sep, command = spec.partition("=")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ValueError(f"--adapter-command {spec!r}: {exc}") from None
    if not sep or not name.strip() or not argv:
        raise ValueError(f"--adapter-command wants NAME=COMMAND, got {spec!r}")
    return name.strip(), argv


def _program(path: str, cwd: str) -> str:
    """A program named by a relative path (``./mylstm-worker``) made absolute
    against ``cwd``, as a shell started there runs it; a bare name (found on
    PATH) or an absolute path unchanged."""
    if os.sep in path and not os.path.isabs(path):
        return os.path.normpath(os.path.join(cwd, path))
    return path


def absolute_command(spec: str, cwd: str | os.PathLike) -> str:
    """``spec`` with a relative program path made absolute against ``cwd``,
    so the command means the same program from any directory (a
    reproduction command run elsewhere included)."""
    import shlex
    try:
        name, argv = _parse_command(spec)
    except ValueError:
        return spec                  # reported where the adapter is created
    program = _program(argv[0], os.fspath(cwd))
    return spec if program == argv[0] else f"{name}={shlex.join([program] + argv[1:])}"


def from_command(spec: str, options: "WorkerOptions | None" = None,
                 cwd: str | None = None) -> Adapter:
    """An out-of-process implementation: ``NAME=COMMAND ARGS...`` speaking the
    worker protocol (docs/worker-protocol.md).  The program runs in ``cwd``
    (default: the current directory), a relative program path resolved
    against it now."""
    from convlstm_conformance.worker import WorkerAdapter
    cwd = cwd or os.getcwd()
    name, argv = _parse_command(spec)
    argv[0] = _program(argv[0], cwd)
    opts = options or worker_options()
    return WorkerAdapter(name, argv=argv, timeout_s=opts.timeout_s,
                         start_timeout_s=opts.start_timeout_s,
                         memory_limit_mb=opts.memory_limit_mb, cwd=cwd)


#: Entry-point group of the renderers (reports/): the core finds them as it
#: finds adapters and imports no report code.
REPORTERS = "convlstm_conformance.reporters"


def reporter(name: str) -> Callable:
    """The renderer registered as ``name`` under REPORTERS (html, certificate,
    findings; see pyproject.toml)."""
    from importlib.metadata import entry_points
    for ep in entry_points(group=REPORTERS):
        if ep.name == name:
            return ep.load()
    raise LookupError(f"no {name!r} renderer registered under {REPORTERS}")


def create(key: str, *, timeout_s: float | None = None, start_timeout_s: float | None = None,
           memory_limit_mb: float | None = None) -> Adapter:
    """An adapter from how a command line names it: a registered name,
    ``object:module:attr`` or ``command:NAME=COMMAND``.  The keyword
    arguments set the limits of a worker process (see worker_options); an
    in-process adapter has none."""
    options = worker_options(timeout_s=timeout_s, start_timeout_s=start_timeout_s,
                             memory_limit_mb=memory_limit_mb)
    if key.startswith("object:"):
        return from_object(key[len("object:"):])
    if key.startswith("command:"):
        return from_command(key[len("command:"):], options)
    return known(key).create(options)


#: Environment variables read by worker_options, by option.
WORKER_ENV = {"timeout_s": "CONVLSTM_WORKER_TIMEOUT",
              "start_timeout_s": "CONVLSTM_WORKER_START_TIMEOUT",
              "memory_limit_mb": "CONVLSTM_WORKER_MEMORY_MB"}


def worker_options(timeout_s: float | None = None, start_timeout_s: float | None = None,
                   memory_limit_mb: float | None = None,
                   environ: Mapping[str, str] | None = None) -> "WorkerOptions":
    """Worker limits: each given value, else its environment variable
    (WORKER_ENV), else the default.  Timeouts are positive seconds; the
    memory limit is MB of resident memory of the worker's process tree, 0 for
    none.  ValueError, naming the option or variable, for anything else."""
    from convlstm_conformance.worker import WorkerOptions
    environ = os.environ if environ is None else environ
    given = {"timeout_s": timeout_s, "start_timeout_s": start_timeout_s,
             "memory_limit_mb": memory_limit_mb}
    values: dict[str, Any] = {}
    for name, value in given.items():
        source = name
        if value is None and environ.get(WORKER_ENV[name], "").strip():
            source = WORKER_ENV[name]
            try:
                value = float(environ[WORKER_ENV[name]])
            except ValueError:
                raise ValueError(f"{source}={environ[source]!r} is not a number") from None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0 \
                or (value == 0 and name != "memory_limit_mb"):
            what = "a number of MB >= 0 (0: no limit)" if name == "memory_limit_mb" \
                else "a positive number of seconds"
            raise ValueError(f"{source} must be {what}, got {value!r}")
        values[name] = float(value) if value or name != "memory_limit_mb" else None
    return WorkerOptions(**values)


def declared_name(key: str) -> str:
    """An adapter's name without creating it, where it can be read: a
    registered name, a command's NAME, an object's class attribute ``name``;
    else the key as the command line spelled it."""
    if key.startswith("command:"):
        return key[len("command:"):].partition("=")[0].strip() or key
    if key.startswith("object:"):
        module, _, attr = key[len("object:"):].partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception:
            return key
        name = getattr(obj, "name", "") if isinstance(obj, type) else ""
        return name if isinstance(name, str) and name else key
    return key


def snippet_for(name: str, case, expected: Mapping[str, Any] | None = None,
                budget: Mapping[str, Any] | None = None) -> str | None:
    """A standalone script showing ``case`` on the implementation registered
    as ``name``: its own framework and NumPy only, compared with ``expected``
    (tensor name -> array: output, and h and c with return_state) within
    ``budget`` (same names, per-element bounds or scalars).  Both default to
    the oracle's result and the tolerance model's budgets.  None when the
    implementation has no snippet writer or the case is not a plain forward
    call (adapters/snippets.py)."""
    entry = entry_for(name)
    if entry is None or not entry.snippet:
        return None
    if expected is None or budget is None:
        from convlstm_conformance import oracle, tolerance
        result = oracle.forward(case)
        names = ("output", "h", "c") if case.config.get("return_state", False) else ("output",)
        expected = {n: getattr(result, n) for n in names}
        budget = {n: b for n, b in tolerance.budgets(case, result).items() if n in names}
    module_name, _, attr = entry.snippet.partition(":")
    writer = getattr(importlib.import_module(module_name), attr)
    return writer(case, expected, budget, **entry.kwargs)


def entry_for(key: str) -> AdapterEntry | None:
    """The registered entry behind a command-line key (None for objects and commands)."""
    if key.startswith(("object:", "command:")):
        return None
    try:
        return known(key)
    except KeyError:
        return None


class Guarded(Adapter):
    """An in-process adapter whose exceptions become outcomes.

    The interface says ``run`` never raises; a third-party adapter that does
    anyway is recorded as an adapter error for that case, with its traceback,
    and the run goes on.
    """

    def __init__(self, inner: Adapter):
        self.inner = inner
        self.name = inner.name
        self.is_judge = bool(getattr(inner, "is_judge", False))

    def capabilities(self):
        return self.inner.capabilities()

    def versions(self):
        return self.inner.versions()

    def run(self, case):
        start = time.perf_counter()
        try:
            outcome = self.inner.run(case)
        except (Exception, SystemExit):    # sys.exit() in an adapter must not end the run
            return Outcome(status=ADAPTER_ERROR, duration_s=time.perf_counter() - start,
                           detail=f"{self.name}.run raised instead of returning an outcome:\n"
                                  + traceback.format_exc()[-3000:])
        # What the judge reads must be what the interface promises: garbage
        # (None, text arrays, a wrong type) is this adapter's error, recorded.
        problem = outcome_problem(outcome)
        if problem:
            return Outcome(status=ADAPTER_ERROR, duration_s=time.perf_counter() - start,
                           detail=f"{self.name}.run {problem}")
        return outcome

    def reset(self):
        getattr(self.inner, "reset", lambda: None)()

    def close(self):
        self.inner.close()
