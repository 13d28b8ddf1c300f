"""`python -m bench data`: the state of the data root, and downloads."""
from __future__ import annotations

from . import HELP
from .common import UsageError, csv, say


def add_parser(sub) -> None:
    data = sub.add_parser("data", help=HELP["data"])
    data.add_argument("--data-root", default=None)
    data.add_argument("--download", type=csv, metavar="NAMES", help="download these datasets")
    data.add_argument("--all-sizes", action="store_true",
                      help="also list MedMNIST at 64, 128 and 224 px when absent")
    data.add_argument("--datasets", type=csv, help="show these (npz:PATH, folder:PATH too)")


def main(args) -> int:
    from ..datasets.registry import all_entries, get_entry
    from ..datasets.root import data_root

    root = data_root(args.data_root)
    for name in args.download or []:
        entry = get_entry(name)
        if entry.family in ("embedded", "user"):
            raise UsageError(f"{name}: nothing to download ({entry.how_to_get})")
        entry.load(root, download_missing=True)
        say(f"{name}: downloaded to {root}")
    print(f"data root: {root}  (--data-root, or $BENCH_DATA)")
    names = args.datasets or list(all_entries())
    rows = []
    for name in names:
        entry = get_entry(name)
        paths = entry.files(root)
        present = all(p.exists() for p in paths)
        if not (present or args.all_sizes or args.datasets) and name.endswith(("_64", "_128",
                                                                                 "_224")):
            continue
        size = sum(p.stat().st_size for p in paths if p.exists())
        state = "present" if present else "missing"
        check = entry.verify(root) if present and entry.verify else ""
        i = entry.info
        rows.append((name, f"{i.n_classes} classes, {i.channels}x{i.resolution}px", state,
                     f"{size / 1e6:.1f} MB" if size else "", check,
                     "" if present else entry.how_to_get,
                     str(paths[0]) if paths else "(in the package)"))
    width = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        line = "  ".join(r[i].ljust(width[i]) for i in range(5))
        print(f"{line}  {r[5] or r[6]}")
    return 0
