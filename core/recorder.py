"""JSON result records, the source of truth for reports.

Each pytest process appends one line per test to ``results-<worker>.jsonl`` and
flushes it at once, so results already measured survive a crash of a later
test.  The controlling process writes ``run.json`` (environment, adapters,
spec) at the start and completes it at the end.  Every record is checked
against the schema of ``records.py`` before it is written; one that is not
valid is written anyway, as an ``error`` record saying what was wrong with it,
so a bug in a writer never loses a result silently.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

from convlstm_conformance import records

RUN_ID_ENV = "CONVLSTM_RUN_ID"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class Recorder:
    def __init__(self, results_dir: Path, worker: str, controller: bool):
        self.dir = results_dir
        self.worker = worker
        self.controller = controller
        self.run_id = os.environ.get(RUN_ID_ENV, "")
        self._fh = None
        self.adapters: dict[str, dict] = {}

    # -- start / end -----------------------------------------------------
    def start(self, run_meta: dict[str, Any]) -> None:
        if self.controller:
            self.run_id = self.run_id or _dt.datetime.now().strftime("%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
            os.environ[RUN_ID_ENV] = self.run_id   # inherited by xdist workers
            self.dir.mkdir(parents=True, exist_ok=True)
            for old in list(self.dir.glob("results-*.jsonl")) + list(self.dir.glob("adapters-*.json")):
                old.unlink()
            shutil.rmtree(self.dir / "cases", ignore_errors=True)
            meta = {"schema": records.SCHEMA_VERSION, "run_id": self.run_id, "started": _now(),
                    "finished": None,
                    "environment": {"python": sys.version.split()[0],
                                    "platform": platform.platform(),
                                    "machine": platform.machine(),
                                    "cpu_count": os.cpu_count()}}
            meta.update(run_meta)
            self._write_run(meta)

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.dir / f"results-{self.worker}.jsonl", "a", encoding="utf-8")
        record = records.plain({"schema": records.SCHEMA_VERSION, "run_id": self.run_id,
                                **record})
        found = records.problems(record)
        if found:
            # A writer's bug: keep what identifies the test, say what was wrong.
            why = "; ".join(f"{'/'.join(map(str, p)) or '(record)'}: {m}" for p, m in found[:5])
            record = {k: record[k] for k in ("schema", "run_id", "nodeid", "clause", "adapter",
                                             "duration_s", "test") if k in record}
            record.setdefault("clause", "?")
            record.setdefault("adapter", "?")
            record.setdefault("nodeid", "")
            record.setdefault("duration_s", 0.0)
            record.update(outcome="error", message=f"the suite wrote a record that breaks "
                                                   f"the record schema: {why}")
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()

    def note_adapter(self, name: str, info: dict[str, Any]) -> None:
        self.adapters.setdefault(name, {}).update(info)

    def finish(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.adapters:
            self._write_json(self.dir / f"adapters-{self.worker}.json", self.adapters)
        if self.controller:
            path = self.dir / "run.json"
            try:
                meta = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                meta = {"schema": records.SCHEMA_VERSION, "run_id": self.run_id, "started": _now()}
            meta["finished"] = _now()
            adapters = meta.setdefault("adapters", {})
            for part in sorted(self.dir.glob("adapters-*.json")):
                try:
                    seen = json.loads(part.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                for name, info in seen.items():
                    adapters.setdefault(name, {}).update(info)
            self._write_run(meta)

    def update_run(self, fields: dict[str, Any]) -> None:
        """Add fields to run.json (the controller, after the tests)."""
        path = self.dir / "run.json"
        meta = json.loads(path.read_text())
        meta.update(fields)
        self._write_run(meta)

    def _write_run(self, meta: dict[str, Any]) -> None:
        meta = records.plain(meta)
        records.check(meta, "run")
        self._write_json(self.dir / "run.json", meta)

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records.plain(obj), indent=2))
        tmp.replace(path)
