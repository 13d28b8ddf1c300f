"""Whether a stored record was computed by the code that is here now.

Every record holds `provenance`: the fingerprint of the code and library versions that
determine its method's numbers (methods/provenance.py) and the device type it ran on. A record
whose fingerprint differs from the current one is *stale*: `bench run` recomputes it (keeping
the old record aside), `bench table` / `bench report` mark its cells and `bench check` fails it.
The device type is not part of staleness: a grid may mix CPU and GPU workers, and a record
says which it came from.
"""
from __future__ import annotations


from .methods import numerics
from .methods.provenance import library_versions
from .methods.registry import code_fingerprint
from .records import Provenance

STALE_MARK = "†"
STALE_NOTE = (f"{STALE_MARK} computed by other code than this version's (or other torch / "
              f"diffusers versions): `python -m bench run` with the same selection recomputes it")


def provenance(method: str, dataset: str, run_numerics: numerics.Numerics) -> Provenance:
    """The code fingerprint, the versions of the libraries besides torch, and the numerics the
    run computed with (methods/numerics.py: torch, device type, threads, pins, CPU)."""
    libraries = {k: v for k, v in library_versions().items() if k != "torch"}
    return Provenance(code_fingerprint(method, dataset), libraries, run_numerics)


def is_stale(record) -> bool:
    """True when `record` (bench/records.py) was not computed by the current code, or when its
    method is not registered in this process (a method of the user's own, named as
    module:Class when it ran: its code cannot be compared here; FLBENCH_METHODS or its entry
    point makes it known)."""
    try:
        current = code_fingerprint(record.method, record.config.dataset)
    except ValueError:
        return True
    return record.provenance.code != current
