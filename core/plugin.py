"""The pytest plugin that runs the conformance suite: options, adapters, records.

Registered through the ``pytest11`` entry point, so the suite runs from any
directory once the package is installed::

    pytest conformance/                         # from a checkout
    pytest --pyargs convlstm_conformance.suite  # from anywhere
    convlstm-conformance run                    # the same, with the report

The plugin stays inert in every other pytest run of the environment: it acts
only when the run collects the suite's directory.  Tests ask for
``adapter_name`` and ``clause_id``; the plugin parametrizes them (adapters
selected on the command line, clauses of the kinds a test module lists in
``CLAUSE_KINDS``), hands out adapters that start once per session, and writes
one JSON record per test (schema: ``records.py``) for the report.
"""
from __future__ import annotations

import dataclasses
import re
import traceback
from pathlib import Path

import pytest

import convlstm_conformance.suite as _suite
from convlstm_conformance import profiles, registry, terminal
from convlstm_conformance.model import Adapter
from convlstm_conformance.recorder import Recorder
from convlstm_conformance.spec import DEFAULT_SPEC, load_cached

SUITE_DIR = Path(_suite.__file__).resolve().parent
SUITE_PACKAGE = _suite.__name__
DEFAULT_RESULTS = Path("reports") / "out"


def pytest_addoption(parser):
    group = parser.getgroup("convlstm-conformance")
    group.addoption("--adapters", default="all",
                    help="comma-separated adapter names, or 'all' (every installed one)")
    group.addoption("--adapter-object", action="append", default=[],
                    help="a third-party in-process adapter, 'package.module:factory' (repeatable)")
    group.addoption("--adapter-command", action="append", default=[],
                    help="a third-party out-of-process adapter, 'NAME=COMMAND ARGS' speaking "
                         "the worker protocol (repeatable)")
    group.addoption("--results-dir", default=str(DEFAULT_RESULTS),
                    help="where JSON records, failing cases and the report go "
                         "(default: reports/out under the current directory)")
    group.addoption("--size", choices=["small", "big"], default="small",
                    help="draw small (fast) or big configurations")
    group.addoption("--spec", default=str(DEFAULT_SPEC), help="the spec file")
    group.addoption("--profile", default=None,
                    help="Hypothesis profile: ci, dev (default) or nightly")
    group.addoption("--no-report", action="store_true", help="do not render the HTML report")
    group.addoption("--worker-timeout", type=float, default=None, metavar="S",
                    help="seconds a worker process may take on one case "
                         "(default: $CONVLSTM_WORKER_TIMEOUT, else docs/limits.md)")
    group.addoption("--worker-start-timeout", type=float, default=None, metavar="S",
                    help="seconds a worker process may take to start "
                         "(default: $CONVLSTM_WORKER_START_TIMEOUT, else docs/limits.md)")
    group.addoption("--worker-memory-mb", type=float, default=None, metavar="MB",
                    help="resident memory of a worker's process tree before it is killed, "
                         "0 for no limit (default: $CONVLSTM_WORKER_MEMORY_MB, else "
                         "docs/limits.md)")


def runs_suite(config) -> bool:
    """Whether this pytest run collects the suite (the plugin acts only then)."""
    for arg in config.args:
        target = str(arg).split("::", 1)[0]
        if config.option.pyargs and (target == SUITE_PACKAGE
                                     or target.startswith(SUITE_PACKAGE + ".")):
            return True
        path = Path(config.invocation_params.dir, target).resolve()
        if path == SUITE_DIR or SUITE_DIR in path.parents:
            return True
    return False


def _active(config) -> bool:
    return getattr(config, "_convlstm_recorder", None) is not None


# --------------------------------------------------------------------------
# Selection


def _selected(config) -> list[str]:
    raw = config.getoption("--adapters")
    if raw == "all":
        names = registry.installed()
    else:
        names = [n.strip() for n in raw.split(",") if n.strip()]
    names += [f"object:{path}" for path in config.getoption("--adapter-object")]
    # A relative program path means the caller's directory, wherever the
    # worker and a reproduction command later run.
    here = config.invocation_params.dir
    names += [f"command:{registry.absolute_command(command, here)}"
              for command in config.getoption("--adapter-command")]
    return names


def display_name(key: str) -> str:
    """How a command-line key reads before its adapter has said its own name."""
    if key.startswith("command:"):
        return key[len("command:"):].partition("=")[0].strip() or key
    return key


def check_selection(names: list[str]) -> None:
    """A run must have something to judge: an empty selection, an unknown
    name or a named implementation that cannot run here is an error, never a
    run of skips that passes (docs/harness-rules.md)."""
    if not names:
        raise pytest.UsageError(
            "convlstm-conformance: no implementation selected (--adapters is empty and no "
            "--adapter-object or --adapter-command was given): there is nothing to judge")
    for name in names:
        if name.startswith(("object:", "command:")):
            continue
        entry = registry.entry_for(name)
        if entry is None:
            known = ", ".join(e.name for e in registry.entries())
            raise pytest.UsageError(f"convlstm-conformance: unknown adapter {name!r}; "
                                    f"registered: {known}")
        ok, why = entry.available()
        if not ok:
            raise pytest.UsageError(f"convlstm-conformance: adapter {name} was selected but "
                                    f"cannot run here ({why}); select only what is installed, "
                                    f"or --adapters all")


def _worker_limits(config) -> dict:
    """The worker limits of the command line, checked now (a bad value is a
    usage error before anything runs, not a failure of every test)."""
    limits = {"timeout_s": config.getoption("--worker-timeout"),
              "start_timeout_s": config.getoption("--worker-start-timeout"),
              "memory_limit_mb": config.getoption("--worker-memory-mb")}
    try:
        registry.worker_options(**limits)
    except ValueError as exc:
        message = str(exc)
        for name, flag in (("start_timeout_s", "--worker-start-timeout"),
                           ("timeout_s", "--worker-timeout"),
                           ("memory_limit_mb", "--worker-memory-mb")):
            if message.startswith(name):
                message = flag + message[len(name):]
                break
        raise pytest.UsageError(f"convlstm-conformance: {message}") from None
    return limits


def _load_contract(config):
    """The spec and every expectations file, loaded once before the tests: a
    malformed one stops the run with its file, line and reason."""
    from convlstm_conformance import expectations
    from convlstm_conformance.spec import SpecError
    try:
        spec = load_cached(config.getoption("--spec"))
        expectations.load_all(spec)
    except SpecError as exc:
        raise pytest.UsageError(f"convlstm-conformance: {exc}") from None
    return spec


def _scales():
    """The draws' scale knobs (strategies.Scales), checked before anything is drawn."""
    from convlstm_conformance.strategies import ScaleError, scales
    try:
        return scales()
    except ScaleError as exc:
        raise pytest.UsageError(f"convlstm-conformance: {exc}") from None


def pytest_configure(config):
    if not runs_suite(config):
        return
    check_selection(_selected(config))
    limits = _worker_limits(config)
    spec = _load_contract(config)
    knobs = _scales()
    profiles.load(config.getoption("--profile"))
    results = Path(config.getoption("--results-dir"))
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    recorder = Recorder(results, worker, controller=not hasattr(config, "workerinput"))
    config._convlstm_recorder = recorder
    config._convlstm_pool = AdapterPool(recorder, limits)
    config._convlstm_crashed = []
    if recorder.controller:
        _controller[:] = [config]
    adapters = {}
    for entry in registry.entries():
        ok, why = entry.available()
        adapters[entry.name] = {"status": "available" if ok else "unavailable", "detail": why}
    for name, why in registry.discover()[1]:
        adapters[name] = {"status": "broken", "detail": why}
    from hypothesis import settings
    from convlstm_conformance import __version__
    try:
        recorder.start({"profile": settings.get_current_profile_name(),
                        "command": "pytest " + " ".join(config.invocation_params.args),
                        "selected": _selected(config), "adapters": adapters,
                        "suite_version": __version__, "spec": spec.fingerprint(),
                        "scales": dataclasses.asdict(knobs)})
    except OSError as exc:
        config._convlstm_recorder = None
        raise pytest.UsageError(f"convlstm-conformance: cannot write results to {results}: "
                                f"{exc.strerror or exc}") from None


def pytest_generate_tests(metafunc):
    if not _active(metafunc.config):
        return
    if "adapter_name" in metafunc.fixturenames:
        names = _selected(metafunc.config)
        metafunc.parametrize("adapter_name", names, ids=[display_name(n) for n in names])
    if "clause_id" in metafunc.fixturenames:
        spec = load_cached(metafunc.config.getoption("--spec"))
        kinds = getattr(metafunc.module, "CLAUSE_KINDS", ())
        only = getattr(metafunc.module, "CLAUSE_FILTER", lambda c: True)
        ids = [c.id for c in spec.clauses.values() if c.kind in kinds and only(c)]
        metafunc.parametrize("clause_id", ids, ids=ids)


# --------------------------------------------------------------------------
# Fixtures


class AdapterPool:
    """Adapters by command-line key, started on first use, closed at session end."""

    def __init__(self, recorder: Recorder, limits: dict | None = None):
        self.recorder = recorder
        self.limits = limits or {}
        self._made: dict[str, Adapter] = {}
        self._broken: dict[str, str] = {}

    def name_of(self, key: str) -> str:
        """The adapter's own name once it exists; records and reports use it."""
        adapter = self._made.get(key)
        return adapter.name if adapter is not None else display_name(key)

    def get(self, key: str) -> Adapter:
        if key in self._broken:
            pytest.fail(f"adapter {display_name(key)} could not be created: {self._broken[key]}")
        if key not in self._made:
            entry = registry.entry_for(key)
            try:
                if entry is None and not key.startswith(("object:", "command:")):
                    registry.known(key)          # raises with the known names
                if entry is not None:
                    ok, why = entry.available()
                    if not ok:
                        pytest.skip(f"adapter {key} unavailable: {why}")
                adapter = registry.create(key, **self.limits)
                caps = adapter.capabilities()
            except pytest.skip.Exception:
                raise
            except Exception as exc:
                self._broken[key] = f"{type(exc).__name__}: {exc}"
                self.recorder.note_adapter(display_name(key), {
                    "status": "broken", "detail": traceback.format_exc()[-2000:]})
                pytest.fail(f"adapter {display_name(key)} could not be created: "
                            f"{self._broken[key]}")
            self._made[key] = adapter
            info = self.recorder.adapters.get(adapter.name, {})
            self.recorder.note_adapter(adapter.name, {
                "capabilities": caps.to_json(),
                "selected_as": sorted(set(info.get("selected_as", [])) | {key})})
        return self._made[key]

    def close(self) -> None:
        for adapter in self._made.values():
            try:
                self.recorder.note_adapter(adapter.name, {"versions": adapter.versions()})
            except Exception as exc:  # a dead worker must not hide the rest
                self.recorder.note_adapter(adapter.name, {"versions_error": str(exc)})
            try:
                adapter.close()
            except Exception:
                pass


@pytest.fixture(scope="session")
def spec(pytestconfig):
    return load_cached(pytestconfig.getoption("--spec"))


@pytest.fixture(scope="session")
def adapters(pytestconfig):
    pool = pytestconfig._convlstm_pool
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def results_dir(pytestconfig) -> Path:
    return Path(pytestconfig.getoption("--results-dir"))


@pytest.fixture(scope="session")
def size(pytestconfig) -> str:
    return pytestconfig.getoption("--size")


@pytest.fixture
def record(request) -> dict:
    """Filled by the test; written as its JSON record."""
    rec: dict = {}
    request.node._convlstm_record = rec
    return rec


# --------------------------------------------------------------------------
# Records


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _active(item.config):
        return
    report = outcome.get_result()
    terminal.concise(report, call.excinfo, item.config)
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        rec = dict(getattr(item, "_convlstm_record", {}) or {})
        params = getattr(getattr(item, "callspec", None), "params", {})
        rec.setdefault("clause", params.get("clause_id") or getattr(item.module, "CLAUSE", None))
        key = params.get("adapter_name")
        if key is not None:
            rec["adapter"] = item.config._convlstm_pool.name_of(key)
        rec.setdefault("test", item.module.__name__.rpartition(".")[2].removeprefix("test_"))
        if hasattr(report, "wasxfail"):
            status = "xpassed" if report.outcome == "passed" else "xfailed"
            rec.setdefault("reason", report.wasxfail)
        elif report.outcome == "failed":
            status = "xpassed" if rec.get("xpassed") else ("failed" if report.when == "call" else "error")
            if not rec.get("message"):
                rec["message"] = str(report.longrepr)[-4000:]
        elif report.outcome == "skipped":
            status = "skipped"
            longrepr = report.longrepr
            rec.setdefault("reason", longrepr[2] if isinstance(longrepr, tuple) else str(longrepr))
        else:
            status = "passed"
        rec.update({"nodeid": item.nodeid, "outcome": status,
                    "duration_s": round(report.duration, 3)})
        rec.pop("xpassed", None)
        item.config._convlstm_recorder.write(rec)


# --------------------------------------------------------------------------
# Crashed workers and partial runs

#: The controlling process's config while a run is active (pytest_runtest_logreport
#: gets no config, and the controller is where xdist reports dead workers).
_controller: list = []
CLAUSE_IN_ID = re.compile(r"-([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)$")   # "...-SEM-STEP"


def crash_record(report, selected: list[str]) -> dict:
    """The record of a test whose pytest worker died under it (xdist reports
    it to the controller as a failure, with no record from the worker)."""
    nodeid = report.nodeid
    params = nodeid.rpartition("[")[2].rstrip("]") if nodeid.endswith("]") else ""
    keys = sorted(selected, key=lambda k: len(display_name(k)), reverse=True)
    key = next((k for k in keys if params == display_name(k)
                or params.startswith(display_name(k) + "-")), None)
    adapter = "UNKNOWN" if key is None else registry.declared_name(key)
    found = CLAUSE_IN_ID.search(params)
    clause = found.group(1) if found else ("CAPABILITY-CLAIMS" if "test_capabilities" in nodeid
                                           else "UNKNOWN")
    module = nodeid.split("::")[0].rpartition("/")[2]
    return {"nodeid": nodeid, "clause": clause, "adapter": adapter, "outcome": "crashed",
            "duration_s": float(getattr(report, "duration", 0.0) or 0.0),
            "test": module.removesuffix(".py").removeprefix("test_"),
            "message": ("the pytest worker process died while running this test (killed, out "
                        "of memory, or a crash in the implementation's native code): "
                        + str(report.longrepr)[-1500:])}


def pytest_runtest_logreport(report):
    if not _controller or not report.failed:
        return
    text = report.longrepr if isinstance(report.longrepr, str) else ""
    if "crashed while running" in text and getattr(report, "node", None) is not None:
        config = _controller[0]
        config._convlstm_crashed.append(report.nodeid)
        config._convlstm_recorder.write(crash_record(report, _selected(config)))


def partial_reason(session, exitstatus) -> str | None:
    """Why the run did not run every collected test, or None."""
    crashed = getattr(session.config, "_convlstm_crashed", [])
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        return "interrupted before every test ran"
    if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        return "stopped by an internal error"
    if session.shouldfail or session.shouldstop:
        return f"stopped early: {session.shouldfail or session.shouldstop}"
    if crashed:
        return f"{len(crashed)} test(s) lost with a crashed pytest worker"
    return None


def expectation_totals(results_dir: Path) -> dict[tuple, dict]:
    """Per expectation entry (file, line), its matching failures and passes
    summed over every test record of the run."""
    import json
    totals: dict[tuple, dict] = {}
    for path in sorted(results_dir.glob("results-*.jsonl")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            for e in rec.get("expected") or []:
                key = (e.get("file", ""), e.get("line", 0))
                t = totals.setdefault(key, {"adapter": rec.get("adapter"), "clause": e["clause"],
                                            "file": key[0], "line": key[1],
                                            "reason": e["reason"], "failed": 0, "passed": 0})
                t["failed"] += e["failed"]
                t["passed"] += e["passed"]
    return totals


def stale_expectations(totals: dict[tuple, dict]) -> tuple[list[dict], list[dict]]:
    """(stale, broad) among the "*" entries: stale ones matched passing
    examples and no failure in the whole run; broad ones matched both.
    (An entry naming a clause is judged by its own test: Context.finish.)"""
    wide = [t for t in totals.values() if t["clause"] == "*"]
    stale = [t for t in wide if t["passed"] and not t["failed"]]
    broad = [t for t in wide if t["passed"] and t["failed"]]
    return stale, broad


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    if not _active(config):
        return
    recorder: Recorder = config._convlstm_recorder
    recorder.finish()
    if recorder.controller:
        _controller.clear()
        stale, broad = stale_expectations(expectation_totals(recorder.dir))
        recorder.update_run({"stale_expectations": stale, "broad_expectations": broad,
                             "partial": partial_reason(session, exitstatus)})
        config._convlstm_stale = stale
        if stale and session.exitstatus == 0:
            session.exitstatus = 1
    if recorder.controller and not config.getoption("--no-report"):
        try:
            path = render_report(recorder.dir)
            config._convlstm_report = path
        except Exception as exc:  # the records are safe; say why there is no HTML
            config._convlstm_report_error = f"{type(exc).__name__}: {exc}"


def render_report(results_dir: Path) -> Path | None:
    """Render the records with the ``html`` reporter (registry.reporter)."""
    path, _ = registry.reporter("html")(results_dir, results_dir / "report.html")
    return path


def pytest_terminal_summary(terminalreporter, config):
    if not _active(config):
        return
    recorder = config._convlstm_recorder
    if not recorder.controller:
        return
    path = getattr(config, "_convlstm_report", None)
    error = getattr(config, "_convlstm_report_error", None)
    terminalreporter.section("convlstm-conformance")
    for t in getattr(config, "_convlstm_stale", []):
        terminalreporter.write_line(
            f"STALE expectation {t['file']}:{t['line']} ({t['adapter']}, every clause): "
            f"{t['passed']} matching examples passed and none failed in this run -- the "
            f"divergence is gone, remove the entry: {t['reason'][:200]}", red=True)
    terminalreporter.write_line(f"records: {recorder.dir}")
    if path:
        terminalreporter.write_line(f"report: {path}")
    elif error:
        terminalreporter.write_line(f"report not rendered: {error}")
