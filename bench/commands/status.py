"""`python -m bench status`: the runs in progress under a results folder, from their live logs
(bench/monitor.py): phase, round or epoch, validation accuracy, time left in the phase."""
from __future__ import annotations

from ..monitor import latest
from ..store import RecordStore, process_alive
from . import HELP
from .common import out_option, say


def add_parser(sub) -> None:
    status = sub.add_parser("status", help=HELP["status"])
    out_option(status)


def main(args) -> int:
    store = RecordStore(args.out, warn=say)
    states = [s for s in map(latest, store.logs()) if s is not None]
    running = [s for s in states if s.state == "running"]
    gone = [s for s in running if process_alive(s.host, s.pid) is False]
    failed = [s for s in states if s.state == "failed"]
    for s in running:
        if s in gone:
            print(f"stopped  {s.line()}: its process is gone; rerun its grid to redo it")
        else:
            print(f"running  {s.line()}")
    for s in failed:
        print(f"failed   {s.label}: {s.error}")
    print(f"{len(running) - len(gone)} running, {len(gone)} stopped, {len(failed)} failed, "
          f"{len(states) - len(running) - len(failed)} finished (live logs under {store.root})")
    return 0
