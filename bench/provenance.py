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

STALE_MARK = "†"
STALE_NOTE = (f"{STALE_MARK} computed by other code than this version's (or other torch / "
              f"diffusers versions): `python -m bench run` with the same selection recomputes it")


def provenance(method: str, dataset: str, run_numerics: numerics.Numerics) -> dict:
    """The code fingerprint, library versions and device type, and the numerics the run
    computed with (methods/numerics.py: threads, pins, CPU capability, caches)."""
    return {"code": code_fingerprint(method, dataset), **library_versions(),
            "device_type": run_numerics.device_type, "numerics": run_numerics.to_dict()}


def is_stale(record) -> bool:
    """True when `record` (bench/records.py) was not computed by the current code."""
    return record.provenance.get("code") != code_fingerprint(record.method,
                                                             record.config.dataset)
