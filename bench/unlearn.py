"""Exact unlearning of the one-round generative methods (FederatedFactory, FedCVAE-Ens; those
whose class sets `unlearns`): forget clients, re-synthesise, retrain.

Forgetting client k of a stored run means running the same config with k added to
`exclude_clients`: k's generators are left out, the others come from the cache, and synthesis and
the classifiers are recomputed. The result is the run that never had client k (the same
config, so the same record identity). Its record gains an `unlearning` entry with the
per-class test accuracy before and after, for every downstream mode, and the classes forgotten:
those of which only the forgotten clients had modules.
"""
from __future__ import annotations

import dataclasses

from .config import ConfigError, RunConfig
from .records import Record


def check_exclusions(config: RunConfig, n_clients: int, option: str | None = None) -> None:
    """The clients a run leaves out (`exclude_clients`, as `--set METHOD.exclude_clients=[...]`
    or `bench unlearn --clients` gives them) must exist in its partition of `n_clients`
    clients (under silos one per class, whatever `n_clients` the config holds), and at least
    one must remain."""
    excluded = set(config.method_params.get("exclude_clients", ()))
    option = option or f"--set {config.method}.exclude_clients"
    bad = sorted(k for k in excluded if not 0 <= k < n_clients)
    if bad:
        raise ConfigError(f"{option}: clients {bad} do not exist; {config.label} has clients "
                          f"0..{n_clients - 1}")
    if len(excluded) >= n_clients:
        raise ConfigError(f"{option}: leaves out all {n_clients} clients of {config.label}, so "
                          f"nothing is left to train on; keep at least one")


def forget_config(config: RunConfig, clients: list[int], n_clients: int) -> RunConfig:
    """`config` with `clients` left out too; `n_clients`: the clients of its partition."""
    from .methods.registry import method_class, registered

    if not method_class(config.method).capabilities.unlearns:
        able = ", ".join(n for n, c in registered().items() if c.capabilities.unlearns)
        raise ConfigError(f"run is a {config.method} run; only runs of {able} can unlearn a "
                          f"client")
    excluded = sorted(set(config.method_params.get("exclude_clients", ())) | set(clients))
    forgotten = dataclasses.replace(config, method_params={**config.method_params,
                                                           "exclude_clients": tuple(excluded)})
    check_exclusions(forgotten, n_clients, "--clients")
    return forgotten


def comparison(before: Record, after: Record, clients: list[int]) -> dict:
    """Per-class test accuracy before and after, for each variant (downstream mode), and the
    classes only the forgotten clients contributed: by the generators each client sent where
    the records list them (`extra.modules`: client, class), else by the clients' class
    counts."""
    def held(record: Record, only: set | None) -> set:
        if "modules" in record.extra:
            return {m["class"] for m in record.extra["modules"]
                    if only is None or m["client"] in only}
        counts = record.split["client_class_counts"]
        out = set(record.config.method_params.get("exclude_clients", ()))
        return {c for k, row in enumerate(counts) if k not in out
                and (only is None or k in only) for c, n in enumerate(row) if n > 0}
    out = {"from_run": before.run_id, "forgotten_clients": clients,
           # classes only the forgotten clients contributed (others keep what they hold)
           "forgotten_classes": sorted(held(before, set(clients)) - held(after, None)),
           "modes": {}}
    for mode, m in after.metrics.variants.items():
        b = before.metrics.variants[mode].selected
        out["modes"][mode] = {"accuracy_before": b["accuracy"],
                              "accuracy_after": m.selected["accuracy"],
                              "per_class_before": b["per_class_accuracy"],
                              "per_class_after": m.selected["per_class_accuracy"]}
    return out
