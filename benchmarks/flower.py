"""The same FedAvg job through this suite and through Flower's simulation engine.

The job (the digits protocol, bench/protocol.py): scikit-learn's digits at 8 px, 10 IID
clients (the suite's partition of seed 0, so both sides train on the same images), the small
GroupNorm CNN, 15 rounds of E = 10 local epochs, batch 64, SGD lr 0.01 with momentum 0.9 and
weight decay 1e-4, the learning rate cosine over rounds, full participation, sample-weighted
averaging, and the global model evaluated on the validation and the test set after every round.

- suite: `python -m bench run --methods fedavg --splits iid --executor sequential --threads 1
  --client-threads 2 --out TMP`, as a user runs one job on two cores (`main` of the command
  line, in this process): two clients at once, one torch thread each, as Flower's 1-CPU side;
  until 2026-12-04 one client at a time on `--threads 2`;
- Flower 1.41 (`pip install -e '.[compare]'`), written as its documentation's PyTorch
  quickstart writes it: a `ClientApp` whose `@app.train()` loads the global `ArrayRecord`,
  trains with a `DataLoader` and replies the weights and `num-examples`; a `ServerApp` whose
  `@app.main()` runs `flwr.serverapp.strategy.FedAvg.start` with an `evaluate_fn`
  (centralised evaluation every round) and the round's learning rate in its train config;
  `flwr.simulation.run_simulation` on the Ray backend with 10 supernodes and `num_cpus` C per
  client (C = 1: two clients train at once, one thread each; C = 2: one at a time, two threads).

`python benchmarks/flower.py measure SIDE` runs one side in a fresh process and samples, every
0.1 s, the memory of that process and all its descendants (Ray's processes included): summed
resident memory (RSS, as `ps` shows it; shared pages count once per process) and summed
proportional memory (PSS: shared pages divided among their processes, what the machine
really holds). It prints one JSON line: the job's wall time (the suite's command, Flower's
`run_simulation` call), per round, the whole process's wall time, the peaks and the final
round's test accuracy. The recorded benchmark: benchmarks/test_flower.py.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROUNDS = 15
SIDES = {"suite": None, "flower-1cpu": 1, "flower-2cpu": 2}  # side -> Flower's CPUs per client
CORES = 2


def flower_available() -> bool:
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


# --- the job, in the suite ---------------------------------------------------------------
def suite_job() -> dict:
    from bench.cli import main

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        code = main(["run", "--methods", "fedavg", "--splits", "iid", "--executor",
                     "sequential", "--threads", "1", "--client-threads", str(CORES),
                     "--out", out])
        wall = time.perf_counter() - t
        if code:
            raise RuntimeError(f"bench run exited {code}")
        from bench.store import RecordStore

        (record,) = RecordStore(out).all_records()
    return {"job_s": wall, "rounds": ROUNDS,
            "test_accuracy": record.metrics.final["accuracy"]}


# --- the job, in Flower --------------------------------------------------------------------
_DATA: dict = {}


def _job_data():
    """(config, x_train float, y_train, client index arrays, x_val, y_val, x_test, y_test):
    the suite's own data and partition, loaded once per process (Ray actor)."""
    if not _DATA:
        import torch

        from bench.config import resolve
        from bench.methods.data import DeviceData
        from bench.runner import cached_dataset, client_indices

        config = resolve("digits", "fedavg", "iid", 0)
        dataset = cached_dataset("digits", None)
        d = DeviceData(dataset, config.resolution, torch.device("cpu"))
        _DATA.update(config=config, clients=client_indices(config, dataset),
                     train=(d.to_float(d.x_train), d.y_train), val=(d.to_float(d.x_val), d.y_val),
                     test=(d.to_float(d.x_test), d.y_test), channels=dataset.info.channels,
                     classes=dataset.info.n_classes)
    return _DATA


def _model():
    from bench.methods.models import build_model

    d = _job_data()
    return build_model("cnn", d["channels"], d["classes"], d["config"].resolution, norm="group")


def _client_app():
    import torch
    import torch.nn.functional as F
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from torch.utils.data import DataLoader, TensorDataset

    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        d = _job_data()
        cfg = d["config"].train
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        idx = torch.from_numpy(d["clients"][int(context.node_config["partition-id"])])
        loader = DataLoader(TensorDataset(d["train"][0][idx], d["train"][1][idx]),
                            batch_size=cfg.batch_size, shuffle=True)
        model = _model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=float(msg.content["config"]["lr"]),
                              momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        model.train()
        for _ in range(cfg.local_epochs):
            for x, y in loader:
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()
        reply = RecordDict({"arrays": ArrayRecord(model.state_dict()),
                            "metrics": MetricRecord({"num-examples": len(idx)})})
        return Message(content=reply, reply_to=msg)

    return app


def _evaluate(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float(torch.cat([model(x[i:i + 1024]).argmax(1) for i in range(0, len(y), 1024)])
                     .eq(y).float().mean())


def _server_app(curve: list):
    from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        d = _job_data()
        cfg = d["config"].train

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            model = _model()
            model.load_state_dict(arrays.to_torch_state_dict())
            m = {"val_accuracy": _evaluate(model, *d["val"]),
                 "test_accuracy": _evaluate(model, *d["test"])}
            curve.append(m)
            return MetricRecord(m)

        # the round's learning rate: Flower's FedAvg sends one train config for all rounds,
        # so the cosine schedule is a strategy that sets it per round
        class CosineFedAvg(FedAvg):
            def configure_train(self, server_round, arrays, config, grid):
                config["lr"] = cfg.lr_at(server_round - 1, ROUNDS)
                return super().configure_train(server_round, arrays, config, grid)

        strategy = CosineFedAvg(fraction_train=1.0, fraction_evaluate=0.0,
                                min_available_nodes=len(d["clients"]))
        strategy.start(grid=grid, initial_arrays=ArrayRecord(_model().state_dict()),
                       num_rounds=ROUNDS, train_config=ConfigRecord({"lr": cfg.lr}),
                       evaluate_fn=evaluate_fn)

    return app


def flower_job(cpus_per_client: int) -> dict:
    from flwr.simulation import run_simulation

    curve: list = []
    t = time.perf_counter()
    run_simulation(server_app=_server_app(curve), client_app=_client_app(),
                   num_supernodes=len(_job_data()["clients"]),
                   backend_config={"client_resources": {"num_cpus": cpus_per_client,
                                                        "num_gpus": 0.0},
                                   "init_args": {"num_cpus": CORES}})
    wall = time.perf_counter() - t
    if len(curve) != ROUNDS + 1:  # evaluate_fn runs before round 1 and after every round
        raise RuntimeError(f"Flower evaluated {len(curve)} times, expected {ROUNDS + 1}")
    return {"job_s": wall, "rounds": ROUNDS, "test_accuracy": curve[-1]["test_accuracy"]}


# --- measuring a side in a fresh process ---------------------------------------------------
def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in bytes; (0, 0) when it has gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def measure(side: str) -> dict:
    """One side in a fresh process; its result with the whole process's wall time and the
    peak summed RSS and PSS over the process and its descendants."""
    if side not in SIDES:
        raise ValueError(f"side {side!r}; valid: {', '.join(SIDES)}")
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "job", side], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    peak = {"rss": 0, "pss": 0, "processes": 0}
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            pids = _descendants(proc.pid)
            mem = [_memory(p) for p in pids]
            peak["rss"] = max(peak["rss"], sum(m[0] for m in mem))
            peak["pss"] = max(peak["pss"], sum(m[1] for m in mem))
            peak["processes"] = max(peak["processes"], len(pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.communicate()[0]
    done.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"the {side} job failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "side": side, "process_s": time.perf_counter() - t,
            "per_round_s": result["job_s"] / result["rounds"], "peak_rss_bytes": peak["rss"],
            "peak_pss_bytes": peak["pss"], "peak_processes": peak["processes"]}


if __name__ == "__main__":
    if sys.argv[1] == "job":
        side = sys.argv[2]
        result = suite_job() if SIDES[side] is None else flower_job(SIDES[side])
        print(json.dumps(result), flush=True)
    elif sys.argv[1] == "measure":
        print(json.dumps(measure(sys.argv[2])))
    else:
        raise SystemExit("usage: python benchmarks/flower.py measure suite|flower-1cpu|flower-2cpu")
