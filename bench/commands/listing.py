"""`python -m bench list`: registered methods, datasets, splits and grids; `--params METHOD`:
a method's `--set` keys with their defaults and what each does."""
from __future__ import annotations

import inspect
import re
import sys

from ..protocol import GRIDS
from . import HELP
from .common import UsageError


def add_parser(sub) -> None:
    lst = sub.add_parser("list", help=HELP["list"])
    lst.add_argument("--params", metavar="METHOD",
                     help="METHOD's --set keys (METHOD.KEY=VALUE) with their defaults and a "
                          "line on each")


def main(args) -> int:
    if args.params:
        return _params(args.params)
    from ..datasets.registry import all_entries
    from ..datasets.splits import SPLITS, _usage
    from ..methods.registry import registered

    print("methods (`python -m bench list --params METHOD` for a method's --set keys):")
    for name, cls in registered().items():
        print(f"  {name:16s} {_summary(sys.modules[cls.__module__].__doc__)}")
    print("datasets (MedMNIST also as NAME_64, NAME_128, NAME_224; your own as npz:PATH or "
          "folder:PATH; `python -m bench data` shows what is present):")
    for name, entry in all_entries().items():
        if name.endswith(("_64", "_128", "_224")):
            continue
        i = entry.info
        print(f"  {name:15s} {i.n_classes} classes, {i.channels} channel(s), {i.resolution} px")
    print("splits:")
    for name, kind in SPLITS.items():
        print(f"  {_usage(name).removeprefix('usage: '):48s} {kind.doc}")
    print("grids (--grid NAME):")
    for name, grid in GRIDS.items():
        print(f"  {name:12s} {grid.description}")
    return 0


def _summary(doc: str | None) -> str:
    """A docstring's first paragraph on one line (its first sentence may span lines)."""
    first = (doc or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in first.splitlines())


def _params(method: str) -> int:
    from ..methods.registry import (MethodError, method_class, method_params, registered,
                                    register_references)

    if ":" in method:  # a method of the user's own, module:Class
        try:
            (method,) = register_references([method])
        except MethodError as e:
            raise UsageError(str(e)) from None
    if method not in registered():
        raise UsageError(f"--params {method!r}: valid choices: {', '.join(registered())}")
    cls = method_class(method)
    values, notes = method_params(method), field_notes(cls.Params)
    if cls.PRESETS:
        notes["preset"] = f"named settings: {', '.join(cls.PRESETS)}"
    preset = f"; defaults of preset {values['preset']!r}" if "preset" in values else ""
    if not values:
        print(f"{method} has no --set keys of its own (the shared ones: `python -m bench run "
              f"--help`)")
        return 0
    print(f"{method} (--set {method}.KEY=VALUE{preset}):")
    width = max(len(f"{k}={v}") for k, v in values.items())
    for key, value in values.items():
        print(f"  {f'{key}={value}':{width}s}  {notes.get(key, '')}".rstrip())
    return 0


def field_notes(params_cls: type) -> dict[str, str]:
    """Each field's comment in the Params dataclass's source: the one on its line, else the
    comment lines just above it."""
    notes, above = {}, []
    for line in inspect.getsource(params_cls).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        field = re.match(r"(\w+)\s*:[^=]*=[^#]*(?:#\s*(.*))?$", stripped)
        if field:
            notes[field.group(1)] = field.group(2) or " ".join(above)
        above = []
    return notes
