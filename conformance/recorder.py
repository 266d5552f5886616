"""JSON result records, the source of truth for reports.

Each pytest process appends one line per test to ``results-<worker>.jsonl`` and
flushes it at once, so results already measured survive a crash of a later
test.  The controlling process writes ``run.json`` (environment, adapters,
spec) at the start and completes it at the end.
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

RUN_ID_ENV = "CONVLSTM_RUN_ID"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


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
            meta = {"run_id": self.run_id, "started": _now(), "finished": None,
                    "environment": {"python": sys.version.split()[0],
                                    "platform": platform.platform(),
                                    "machine": platform.machine(),
                                    "cpu_count": os.cpu_count()}}
            meta.update(run_meta)
            self._write_json(self.dir / "run.json", meta)

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.dir / f"results-{self.worker}.jsonl", "a", encoding="utf-8")
        record = {"run_id": self.run_id, **record}
        self._fh.write(json.dumps(record, default=_json_default) + "\n")
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
                meta = {"run_id": self.run_id}
            meta["finished"] = _now()
            adapters = meta.setdefault("adapters", {})
            for part in sorted(self.dir.glob("adapters-*.json")):
                try:
                    seen = json.loads(part.read_text())
                except (OSError, json.JSONDecodeError):
                    continue
                for name, info in seen.items():
                    adapters.setdefault(name, {}).update(info)
            self._write_json(path, meta)

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default))
        tmp.replace(path)
