"""What several test modules share: paths, tiny run settings and the analytic scalar model.
Test modules import from here, never from each other or from conftest (which holds fixtures)."""
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from bench.config import parse_overrides, resolve
from bench.methods.results import Communication, Evaluation, Metrics
from bench.methods.training import LocalStats
from bench.records import Record

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def make_record(config, metrics: Metrics | None = None, **fields) -> Record:
    """A record of `config` with the given fields and placeholders for the rest (tables,
    checks and the store read only some; no training)."""
    metrics = metrics or Metrics.single(Evaluation({"accuracy": 0.5}, {"accuracy": 0.5}))
    defaults = dict(run_id=config.run_id, config=config,
                    dataset_info={"n_classes": 10, "class_names": [str(i) for i in range(10)]},
                    split={"client_class_counts": []}, model_parameters=0, metrics=metrics,
                    curves={}, communication={v: Communication(1, 0, 0)
                                              for v in metrics.variants},
                    timings={}, extra={}, environment={}, provenance={},
                    created="2026-11-30T00:00:00+00:00")
    return Record(**{**defaults, **fields})


def stored_records(folder) -> list[Record]:
    """Every record under `folder` (a results root), read and verified as the suite reads
    them."""
    from bench.store import RecordStore

    return [RecordStore.read(p) for p in sorted(Path(folder).rglob("runs/*/*/*.json"))]


def run_cli(*args: str, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m bench ARGS` in a subprocess, its output captured (so not a terminal)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout, check=False)


def tiny_overrides(rounds: int = 2, local_epochs: int = 1) -> list[str]:
    """--set values that make a digits run take about a second."""
    return ["--set", f"rounds={rounds}", "--set", f"local_epochs={local_epochs}"]


# FederatedFactory in seconds: generators that see 128 images, 16 samples per class
TINY_FF = ["federatedfactory.gen_images_seen=128", "federatedfactory.samples_per_class=16",
           "federatedfactory.sampler_steps=3", "federatedfactory.classifier_epochs=2"]
TINY_FF_CLI = [x for item in TINY_FF for x in ("--set", item)]


def ff_config(split="silos", extra=(), seed=0):
    """A tiny FederatedFactory run on digits."""
    return resolve("digits", "federatedfactory", split, seed, parse_overrides([*TINY_FF, *extra]))


# --- the analytic model of tests/test_methods_math.py and tests/test_peers.py: each client's
# loss is f_i(w) = (w - b_i)^2 / 2, trained by plain SGD through the method's own hooks ------
class Scalar(nn.Module):
    def __init__(self, value=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([value], dtype=torch.float64))


def local_sgd(model, hooks, b, lr, steps):
    p = model.w
    for _ in range(steps):
        p.grad = (p.detach() - b).clone()
        hooks.adjust_gradients([p.detach()], [p.grad])
        with torch.no_grad():
            p -= lr * p.grad
    return LocalStats(steps=steps, samples=steps, mean_loss=0.0)


def one_round(method, clients, x, server, states, lr, steps, n_total, weights=None):
    """Run one round over `clients` (list of b_i) and return (new global, server, states)."""
    model = Scalar()
    global_state = {"w": torch.tensor([x], dtype=torch.float64)}
    if server is None:
        server = method.init_server(model, global_state)
    acc = method.start_round(global_state)
    for i, b in enumerate(clients):
        model.load_state_dict(global_state)
        state = states.get(i) or method.init_client(global_state, server)
        hooks = method.client_hooks(model, global_state, server, state)
        stats = local_sgd(model, hooks, b, lr, steps)
        msg, states[i] = method.client_message(model, global_state, server, state, hooks, stats, lr)
        method.accumulate(acc, msg, (weights or [1] * len(clients))[i])
    new, server = method.aggregate(acc, global_state, server, n_total)
    return float(new["w"]), server, states


def readme_example_class():
    """The example method of README.md ("A method of your own", FedAvgM), as a class."""
    import importlib.util
    import re

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?class FedAvgM.*?)```", text, re.S).group(1)
    source = "\n".join(line[2:] for line in block.splitlines())  # the block's indent
    source = source.replace("from .weight_averaging", "from bench.methods.weight_averaging")
    spec = importlib.util.spec_from_loader("readme_fedavgm", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "README.md", "exec"), module.__dict__)
    sys.modules.pop("readme_fedavgm", None)
    return module.FedAvgM
