"""MLflow tracking: `bench run --mlflow [URI]` logs every run of the selection to MLflow, as
many labs keep their experiments there.

Each stored run becomes one MLflow run (named by its label and id, tagged `flbench.run_id`),
with its config as parameters (`dataset`, `method`, `split`, `seed`, `train.*`, the method's
own as `METHOD.PARAM`, `dp.*`), its per-round curves (`val_accuracy`, `test_auroc`,
`train_loss`, `lr`, ... at step = the round or epoch, the whole run even when it resumed from
a checkpoint), and its final numbers: `test/NAME` and `val/NAME` of the validation-selected
round, `test/worst_client_accuracy` and `membership_auc` (with `VARIANT/` before each for a
method serving several models, e.g. FederatedFactory's modes). All come from its record.

The runs are logged by the command's own process, each as soon as it is stored (and those
found stored, after the grid), never by the workers, so that any executor, Ray included,
logs alike and one process writes the store; a run already logged under the URI is not
logged again. The default URI is a SQLite file in
the results folder (`sqlite:///<out>/mlflow.db`, no server; MLflow's plain-file store is in
maintenance): `mlflow ui --backend-store-uri sqlite:///results/mlflow.db` shows it (the UI
comes with the full `mlflow` package). Needs the optional `.[mlflow]` extra: `mlflow-skinny`,
and SQLAlchemy and Alembic for its SQLite store.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .config import ConfigError
from .records import Record

EXPERIMENT = "flbench"
TAG = "flbench.run_id"
FINAL = ("accuracy", "balanced_accuracy", "auroc", "f1_macro", "loss")
BATCH = 1000  # MLflow's most metrics per log_batch call


def default_uri(out: str | Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def client(uri: str):
    """An MLflow client of `uri`, or a one-line error when the package is absent."""
    import importlib.util

    # mlflow-skinny's SQLite store needs SQLAlchemy and Alembic, which it does not install
    needed = ["mlflow"] + (["sqlalchemy", "alembic"] if uri.startswith("sqlite:") else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"--mlflow needs {', '.join(missing)}: pip install mlflow-skinny "
                          f"sqlalchemy alembic (or pip install -e '.[mlflow]')")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def params(record: Record) -> dict[str, str]:
    c = record.config
    flat = {"dataset": c.dataset, "method": c.method, "split": c.split, "seed": c.seed,
            "n_clients": c.n_clients, "resolution": c.resolution, "run_id": c.run_id,
            **{f"train.{k}": v for k, v in dataclasses.asdict(c.train).items()},
            **{f"{c.method}.{k}": v for k, v in c.method_params.items()},
            **({f"dp.{k}": v for k, v in dataclasses.asdict(c.dp).items()} if c.dp else {})}
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flat.items()}


def final_metrics(record: Record) -> dict[str, float]:
    """The record's numbers of its validation-selected round, by MLflow key (`VARIANT/` before
    each for a method serving several models)."""
    out = {}
    several = len(record.metrics.variants) > 1
    for _, variant, evaluation in record.variants():
        prefix = f"{variant}/" if several else ""
        entry = evaluation.selected or {}
        for part, values in (("test", entry), ("val", entry.get("val") or {})):
            for k in FINAL:
                if values.get(k) is not None:
                    out[f"{prefix}{part}/{k}"] = float(values[k])
        worst = ((entry.get("per_client") or {}).get("accuracy") or {}).get("worst")
        if worst is not None:
            out[f"{prefix}test/worst_client_accuracy"] = float(worst)
        shared = record.audit.get(f"shared/{variant}") or record.audit.get("shared")
        if shared is not None and shared.auc is not None:
            out[f"{prefix}membership_auc"] = float(shared.auc)
    return out


def curve_metrics(record: Record) -> list[tuple[str, float, int]]:
    """(key, value, step) of every per-round (or per-epoch) value of the record's curves
    (`val_accuracy`, `test_auroc`, `train_loss`, `lr`, ...; `VARIANT/NAME` for a variant's),
    at step = its round: the whole run, a resumed one included."""
    out = []
    for key, values in record.curves.items():
        prefix, _, name = key.rpartition("/")
        rounds = record.curves.get(f"{prefix}/round" if prefix else "round")
        if name == "round" or not isinstance(values, list) or rounds is None:
            continue
        for step, v in zip(rounds, values):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                out.append((key, float(v), int(step)))
    return out


class Tracker:
    """One MLflow experiment (`flbench`) under `uri`; `log(record)` logs a stored run unless
    a run of its id is there already."""

    def __init__(self, uri: str):
        self.uri, self.mlflow = uri, client(uri)
        experiment = self.mlflow.get_experiment_by_name(EXPERIMENT)
        self.eid = experiment.experiment_id if experiment else \
            self.mlflow.create_experiment(EXPERIMENT)
        self.logged = {r.data.tags.get(TAG) for r in self.mlflow.search_runs(
            [self.eid], filter_string=f"tags.`{TAG}` != ''", max_results=50_000)}

    def log(self, record: Record) -> bool:
        from mlflow.entities import Metric, Param, RunTag

        if record.run_id in self.logged:
            return False
        c = record.config
        run = self.mlflow.create_run(self.eid, run_name=f"{c.label} [{c.run_id[:8]}]",
                                     tags={TAG: c.run_id})
        rid, stamp = run.info.run_id, int(run.info.start_time)
        metrics = [Metric(k, v, stamp, s) for k, v, s in curve_metrics(record)]
        metrics += [Metric(k, v, stamp, 0) for k, v in final_metrics(record).items()]
        items = [Param(k, v) for k, v in params(record).items()]
        tags = [RunTag(f"flbench.{k}", str(getattr(c, k)))
                for k in ("dataset", "method", "split", "seed")]
        self.mlflow.log_batch(rid, params=items[:100], tags=tags)
        for i in range(100, len(items), 100):
            self.mlflow.log_batch(rid, params=items[i:i + 100])
        for i in range(0, len(metrics), BATCH):
            self.mlflow.log_batch(rid, metrics=metrics[i:i + BATCH])
        self.mlflow.set_terminated(rid)
        self.logged.add(record.run_id)
        return True
