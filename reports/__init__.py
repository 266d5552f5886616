"""Reports for conformance runs: a self-contained HTML page and a results history.

JSON result records (``run.json`` plus ``results-*.jsonl``, schema in
``convlstm_conformance.records``) are the source of truth; ``records`` reads
them, ``html`` renders them and ``history`` keeps runs in SQLite to compare
framework releases.  Installed as ``convlstm_conformance.reports``; command
line: ``python -m convlstm_conformance.reports --help``.
"""
