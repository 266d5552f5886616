"""Reports for conformance runs: a self-contained HTML page and a results history.

JSON result records (``run.json`` plus ``results-*.jsonl``) are the source of
truth; :mod:`reports.records` reads them, :mod:`reports.html` renders them and
:mod:`reports.history` keeps runs in SQLite to compare framework releases.
Command line: ``python -m reports --help``.
"""
