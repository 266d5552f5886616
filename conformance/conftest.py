"""pytest plumbing for the conformance suite: options, adapters, records.

Tests ask for ``adapter_name`` and ``clause_id``; this file parametrizes them
(adapters selected on the command line, clauses of the kinds a test module
lists in ``CLAUSE_KINDS``), hands out adapters that start once per session, and
writes one JSON record per test for the report.
"""
from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from adapters import registry
from adapters.base import Adapter
from conformance import profiles
from conformance.recorder import Recorder
from conformance.spec import DEFAULT_SPEC, load_cached

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    group = parser.getgroup("convlstm-conformance")
    group.addoption("--adapters", default="all",
                    help="comma-separated adapter names, or 'all' (every installed one)")
    group.addoption("--adapter-object", action="append", default=[],
                    help="a third-party in-process adapter, 'package.module:factory' (repeatable)")
    group.addoption("--adapter-command", action="append", default=[],
                    help="a third-party out-of-process adapter, 'NAME=COMMAND ARGS' speaking "
                         "the worker protocol (repeatable)")
    group.addoption("--results-dir", default=str(REPO_ROOT / "reports" / "out"),
                    help="where JSON records, failing cases and the report go")
    group.addoption("--size", choices=["small", "big"], default="small",
                    help="draw small (fast) or big configurations")
    group.addoption("--spec", default=str(DEFAULT_SPEC), help="the spec file")
    group.addoption("--profile", default=None,
                    help="Hypothesis profile: ci, dev (default) or nightly")
    group.addoption("--no-report", action="store_true", help="do not render the HTML report")


# --------------------------------------------------------------------------
# Selection


def _selected(config) -> list[str]:
    raw = config.getoption("--adapters")
    names: list[str] = []
    if raw == "all":
        names = registry.installed()
        # Third-party adapters published under our entry-point group.
        names += [f"object:{target}" for target in registry.entry_point_adapters().values()]
    else:
        names = [n.strip() for n in raw.split(",") if n.strip()]
    for path in config.getoption("--adapter-object"):
        names.append(f"object:{path}")
    for command in config.getoption("--adapter-command"):
        names.append(f"command:{command}")
    return names


def pytest_configure(config):
    profiles.load(config.getoption("--profile"))
    results = Path(config.getoption("--results-dir"))
    worker = getattr(config, "workerinput", {}).get("workerid", "main")
    recorder = Recorder(results, worker, controller=not hasattr(config, "workerinput"))
    config._convlstm_recorder = recorder
    spec = load_cached(config.getoption("--spec"))
    adapters = {}
    for spec_ in registry.KNOWN:
        ok, why = spec_.available()
        if ok and not registry.module_present(spec_.target):
            ok, why = False, f"adapter module {spec_.target} missing"
        adapters[spec_.name] = {"status": "available" if ok else "unavailable", "detail": why}
    from hypothesis import settings
    recorder.start({"profile": settings.get_current_profile_name(),
                    "command": "pytest " + " ".join(config.invocation_params.args),
                    "selected": _selected(config), "adapters": adapters,
                    "spec": spec.fingerprint()})


def pytest_generate_tests(metafunc):
    if "adapter_name" in metafunc.fixturenames:
        names = _selected(metafunc.config)
        ids = [n.partition("=")[0] if n.startswith("command:") else n for n in names]
        metafunc.parametrize("adapter_name", names, ids=ids)
    if "clause_id" in metafunc.fixturenames:
        spec = load_cached(metafunc.config.getoption("--spec"))
        kinds = getattr(metafunc.module, "CLAUSE_KINDS", ())
        only = getattr(metafunc.module, "CLAUSE_FILTER", lambda c: True)
        ids = [c.id for c in spec.clauses.values() if c.kind in kinds and only(c)]
        metafunc.parametrize("clause_id", ids, ids=ids)


# --------------------------------------------------------------------------
# Fixtures


class AdapterPool:
    """Adapters by name, started on first use, closed at session end."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self._made: dict[str, Adapter] = {}
        self._broken: dict[str, str] = {}

    def get(self, name: str) -> Adapter:
        if name in self._broken:
            pytest.fail(f"adapter {name} could not be created: {self._broken[name]}")
        if name not in self._made:
            try:
                if name.startswith("object:"):
                    adapter = registry.from_object(name[len("object:"):])
                elif name.startswith("command:"):
                    adapter = registry.from_command(name[len("command:"):])
                else:
                    spec_ = registry.known(name)
                    ok, why = spec_.available()
                    if not ok:
                        pytest.skip(f"adapter {name} unavailable: {why}")
                    adapter = registry.create(spec_)
                caps = adapter.capabilities()
            except pytest.skip.Exception:
                raise
            except Exception as exc:
                self._broken[name] = f"{type(exc).__name__}: {exc}"
                self.recorder.note_adapter(name, {"status": "broken",
                                                  "detail": traceback.format_exc()[-2000:]})
                pytest.fail(f"adapter {name} could not be created: {self._broken[name]}")
            self._made[name] = adapter
            self.recorder.note_adapter(adapter.name, {"capabilities": caps.to_json()})
        return self._made[name]

    def close(self) -> None:
        for name, adapter in self._made.items():
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
    pool = AdapterPool(pytestconfig._convlstm_recorder)
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
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        rec = dict(getattr(item, "_convlstm_record", {}) or {})
        params = getattr(getattr(item, "callspec", None), "params", {})
        rec.setdefault("clause", params.get("clause_id") or getattr(item.module, "CLAUSE", None))
        rec.setdefault("adapter", params.get("adapter_name"))
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


def pytest_sessionfinish(session, exitstatus):
    recorder: Recorder = session.config._convlstm_recorder
    recorder.finish()
    if recorder.controller and not session.config.getoption("--no-report"):
        try:
            from reports.html import build
            path, _ = build(recorder.dir, recorder.dir / "report.html")
            session.config._convlstm_report = path
        except Exception as exc:  # the records are safe; say why there is no HTML
            session.config._convlstm_report_error = f"{type(exc).__name__}: {exc}"


def pytest_terminal_summary(terminalreporter, config):
    path = getattr(config, "_convlstm_report", None)
    error = getattr(config, "_convlstm_report_error", None)
    recorder = getattr(config, "_convlstm_recorder", None)
    if recorder is None or not recorder.controller:
        return
    terminalreporter.section("convlstm-conformance")
    terminalreporter.write_line(f"records: {recorder.dir}")
    if path:
        terminalreporter.write_line(f"report: {path}")
    elif error:
        terminalreporter.write_line(f"report not rendered: {error}")
