"""A worker's last line of defence: when the process that started it dies,
kill the worker's whole process tree and remove its temporary directory.

The suite starts one watchdog per worker adapter (``core/worker.py``) and
keeps the write end of its stdin; the watchdog reads commands from it:

* ``watch PID``   a worker started (its own session: PID is the session id)
* ``forget PID``  that worker was stopped cleanly
* ``exit``        the adapter was closed; leave without killing anything

End of input without ``exit`` means the suite died (killed, crashed): every
watched worker's tree is killed and the directory removed.  The module uses
the standard library only and is run as a script (``python -I -S``), so it
starts in milliseconds and holds no framework.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys


def _stat_fields(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of ``pid``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[1]), int(fields[3])
    except (IndexError, ValueError):
        return None


def process_tree(root: int) -> list[int]:
    """``root``, every process of its session and every descendant (by parent
    id, so one that started a session of its own is still found), read from
    /proc.  Empty where /proc is not available."""
    parents: dict[int, int] = {}
    members: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        info = _stat_fields(int(name))
        if info is None:
            continue
        parents[int(name)] = info[0]
        if info[1] == root:
            members.append(int(name))
    tree = set(members)
    if root in parents:
        tree.add(root)
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    tree.discard(os.getpid())
    return sorted(tree)


def kill_tree(root: int) -> None:
    """SIGKILL ``root``'s process group and every process of its tree."""
    pids = process_tree(root)
    try:
        os.killpg(root, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def main(argv: list[str]) -> int:
    # The suite's terminal may go away with it; only end of input ends this.
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    directory = argv[1] if len(argv) > 1 else ""
    watched: set[int] = set()
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "exit":
            return 0
        if command in ("watch", "forget") and arg.isdigit():
            (watched.add if command == "watch" else watched.discard)(int(arg))
    for pid in sorted(watched):
        kill_tree(pid)
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
