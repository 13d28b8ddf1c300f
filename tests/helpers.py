"""What several test modules share: paths, tiny run settings and the analytic scalar model.
Test modules import from here, never from each other or from conftest (which holds fixtures)."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

import torch
from torch import nn

from bench.config import parse_overrides, resolve
from bench.conformance import comparable  # noqa: F401  (the tests' record comparison)
from bench.methods.results import Communication, Evaluation, Metrics
from bench.methods.training import LocalStats
from bench.records import Provenance, Record

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
                    timings={}, extra={}, environment={},
                    provenance=Provenance("placeholder", {}, None),
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
    """The example method of README.md ("A method of your own", FedExP), as a class."""
    import importlib.util
    import re

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?class FedExP.*?)```", text, re.S).group(1)
    source = "\n".join(line[2:] for line in block.splitlines())  # the block's indent
    source = source.replace("from .weight_averaging", "from bench.methods.weight_averaging")
    spec = importlib.util.spec_from_loader("readme_fedexp", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "README.md", "exec"), module.__dict__)
    sys.modules.pop("readme_fedexp", None)
    return module.FedExP


# --- real datasets' official formats, written by the tests (no network) -----------------
def write_medmnist(path, n=(40, 10, 12), size=28, channels=1, classes=2, seed=0):
    """An archive in the exact MedMNIST v2 layout: uint8 images (N, H, W[, 3]), labels (N, 1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        shape = (count, size, size) + ((3,) if channels == 3 else ())
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).astype(np.uint8)[:, None]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return arrays


def write_cifar(root, per_batch=20):
    """The official python archive layout: pickled dicts with b'data' (N, 3072) and b'labels'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"labels": [i % 10 for i in range(per_batch)],
             b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"filenames": [b"x.png"] * per_batch}
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"airplane"] * 10}, f)


def write_isic(root, per_center=6):
    """The official ISIC 2019 training layout (JPEG folder, ground truth and metadata CSVs with
    the official columns) and FLamby's train_test_split file."""
    import pandas as pd
    from PIL import Image

    base = root / "isic2019"
    (base / "ISIC_2019_Training_Input").mkdir(parents=True)
    classes = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
    rows, rng, i = [], np.random.default_rng(0), 0
    for center in range(6):
        for j in range(per_center):
            name = f"ISIC_{i:07d}"
            Image.fromarray(rng.integers(0, 256, (30 + center, 40, 3), dtype=np.uint8)).save(
                base / "ISIC_2019_Training_Input" / f"{name}.jpg")
            rows.append((name, (i + center) % 8, center, "test" if j == 0 else "train"))
            i += 1
    truth = pd.DataFrame([{"image": n, **{c: float(k == t) for k, c in enumerate(classes)},
                           "UNK": 0.0} for n, t, _, _ in rows])
    truth.to_csv(base / "ISIC_2019_Training_GroundTruth.csv", index=False)
    pd.DataFrame([{"image": n, "age_approx": 50, "anatom_site_general": "torso",
                   "lesion_id": f"L{k}", "sex": "male"} for k, (n, _, _, _) in enumerate(rows)]
                 ).to_csv(base / "ISIC_2019_Training_Metadata.csv", index=False)
    pd.DataFrame([{"image": n, "target": t, "center": c, "fold": f} for n, t, c, f in rows]
                 ).to_csv(base / "train_test_split", index=False)
