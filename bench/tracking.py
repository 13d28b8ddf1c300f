"""MLflow tracking: `bench run --mlflow [URI]` logs every run of the selection to MLflow, as
many labs keep their experiments there.

Each stored run becomes one MLflow run (named by its label and id, tagged `flbench.run_id`),
with its config as parameters (`dataset`, `method`, `split`, `seed`, `train.*`, the method's
own as `METHOD.PARAM`, `dp.*`), its per-round validation and test metrics from its live log
(bench/monitor.py; the metric `PHASE/NAME` at step = the round or epoch, the keys TensorBoard
gets), and its final metrics from its record: `test/NAME` and `val/NAME` of the
validation-selected round, `test/worst_client_accuracy`, `membership_auc` (with
`VARIANT/` before each for a method serving several models, e.g. FederatedFactory's modes).

The runs are logged by the command's own process once they are stored (never by the
workers), so that any executor, Ray included, logs alike and one process writes the store;
a run already logged under the URI is not logged again. The default URI is a SQLite file in
the results folder (`sqlite:///<out>/mlflow.db`, no server; MLflow's plain-file store is in
maintenance): `mlflow ui --backend-store-uri sqlite:///results/mlflow.db` shows it. Needs
the optional `mlflow-skinny` package (`pip install -e '.[mlflow]'`).
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
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("--mlflow needs the mlflow-skinny package: pip install mlflow-skinny "
                          "(or pip install -e '.[mlflow]')") from None
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
    """The record's numbers of its validation-selected round, by MLflow key."""
    out = {}
    for _, variant, evaluation in record.variants():
        prefix = "" if len(record.metrics.variants) == 1 else f"{variant}/"
        entry = evaluation.selected or {}
        for part, values in (("test", entry), ("val", entry.get("val") or {})):
            for k in FINAL:
                if values.get(k) is not None:
                    out[f"{prefix}{part}/{k}"] = float(values[k])
        worst = ((entry.get("per_client") or {}).get("accuracy") or {}).get("worst")
        if worst is not None:
            out[f"{prefix}test/worst_client_accuracy"] = float(worst)
    shared = record.audit.get("shared")
    if shared is not None and shared.auc is not None:
        out["membership_auc"] = float(shared.auc)
    return out


def round_metrics(log: Path) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp in ms, step) of every evaluated round or epoch of the last
    attempt in a live log (bench/monitor.py's `step` lines)."""
    if not log.exists():
        return []
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
    starts = [i for i, x in enumerate(lines) if x.get("event") == "start"]
    out = []
    for x in lines[starts[-1] if starts else 0:]:
        if x.get("event") != "step":
            continue
        skip = {"event", "time", "elapsed", "phase", "step", "total", "round", "seconds",
                "eta_s"}
        for k, v in x.items():
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.append((f"{x['phase']}/{k}", float(v), int(x["time"] * 1000),
                            int(x["round"])))
    return out


def log_records(records: list[Record], logs: dict[str, Path], uri: str) -> int:
    """Log each record not yet logged under `uri` (`logs`: run id -> its live log). Returns
    how many were logged."""
    from mlflow.entities import Metric, Param, RunTag

    mlflow = client(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    eid = experiment.experiment_id if experiment else mlflow.create_experiment(EXPERIMENT)
    logged = {r.data.tags.get(TAG) for r in mlflow.search_runs(
        [eid], filter_string=f"tags.`{TAG}` != ''", max_results=50_000)}
    count = 0
    for record in records:
        if record.run_id in logged:
            continue
        c = record.config
        run = mlflow.create_run(eid, run_name=f"{c.label} [{c.run_id[:8]}]",
                                tags={TAG: c.run_id})
        rid = run.info.run_id
        stamp = int(run.info.start_time)
        metrics = [Metric(k, v, t, s) for k, v, t, s in round_metrics(logs[record.run_id])]
        metrics += [Metric(k, v, stamp, 0) for k, v in final_metrics(record).items()]
        items = [Param(k, v) for k, v in params(record).items()]
        tags = [RunTag(f"flbench.{k}", str(getattr(c, k)))
                for k in ("dataset", "method", "split", "seed")]
        mlflow.log_batch(rid, params=items[:100], tags=tags)
        for i in range(100, len(items), 100):
            mlflow.log_batch(rid, params=items[i:i + 100])
        for i in range(0, len(metrics), BATCH):
            mlflow.log_batch(rid, metrics=metrics[i:i + BATCH])
        mlflow.set_terminated(rid)
        count += 1
    return count
