"""`python -m bench list`: registered methods, datasets, splits and grids."""
from __future__ import annotations

import sys

from ..protocol import GRIDS


def add_parser(sub) -> None:
    sub.add_parser("list", help="registered methods, datasets and splits")


def main(args) -> int:
    from ..datasets.registry import all_entries
    from ..datasets.splits import SPLITS, _usage
    from ..methods.registry import METHODS, method_params

    print("methods:")
    for name, cls in METHODS.items():
        params = ", ".join(f"{k}={v}" for k, v in method_params(name).items())
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        print(f"  {name:12s} {doc[0] if doc else ''}{f'  [{params}]' if params else ''}")
    print("datasets (MedMNIST also as NAME_64, NAME_128, NAME_224; your own as npz:PATH or "
          "folder:PATH; `python -m bench data` shows what is present):")
    for name, entry in all_entries().items():
        if name.endswith(("_64", "_128", "_224")):
            continue
        i = entry.info
        print(f"  {name:15s} {i.n_classes} classes, {i.channels} channel(s), {i.resolution} px")
    print("splits:")
    for name in SPLITS:
        print(f"  {_usage(name).removeprefix('usage: ')}")
    print("grids (--grid NAME):")
    for name, grid in GRIDS.items():
        print(f"  {name:12s} {grid.description}")
    return 0
