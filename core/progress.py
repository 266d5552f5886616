"""Progress of a running suite, read from outside the pytest process.

``certify`` loads this module into its pytest run (``-p
convlstm_conformance.progress``): once tests are collected it writes their
number to ``collected.json`` in the results directory.  Every test record is
flushed to ``results-*.jsonl`` as the test ends (recorder.py), so the caller
counts tests done and failures so far from those files, and estimates the
time left from the mean duration so far.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

COLLECTED = "collected.json"
FAILING = ("failed", "error", "crashed")


def pytest_collection_finish(session):
    """Every pytest process collects the whole suite; any of them may write."""
    config = session.config
    if getattr(config, "_convlstm_recorder", None) is None or not session.items:
        return      # not the suite, or xdist's controller (its workers collect)
    results = Path(config.getoption("--results-dir"))
    tmp = results / f"{COLLECTED}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps({"tests": len(session.items)}))
        tmp.replace(results / COLLECTED)
    except OSError:
        pass     # progress is a courtesy; the run goes on without it


class Progress:
    """Counts of a results directory, polled while the suite runs."""

    def __init__(self, results_dir: Path, started: float | None = None):
        self.dir = Path(results_dir)
        self.started = time.monotonic() if started is None else started
        (self.dir / COLLECTED).unlink(missing_ok=True)

    def counts(self) -> tuple[int, int, int | None]:
        """(tests done, failing so far, tests collected or None)."""
        from convlstm_conformance.findings import read_records
        done = failing = 0
        for record in read_records(self.dir):     # a line being written is skipped
            done += 1
            failing += record.get("outcome") in FAILING
        try:
            total = int(json.loads((self.dir / COLLECTED).read_text())["tests"])
        except (OSError, ValueError, KeyError, TypeError):
            total = None
        return done, failing, total

    def line(self, now: float | None = None) -> str:
        elapsed = (time.monotonic() if now is None else now) - self.started
        done, failing, total = self.counts()
        text = f"{done}/{total if total is not None else '?'} tests, {failing} failing, " \
               f"{clock(elapsed)} elapsed"
        if total and done:
            text += f", about {clock(elapsed / done * max(total - done, 0))} left"
        return text


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"
