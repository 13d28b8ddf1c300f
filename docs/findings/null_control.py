"""The membership audit's null control, measured alone, over many draws: how the classifier
attack reads a network trained on neither set (the audit's `null_network`, with the run's
recipe, on one half of the validation split) when its members are training images and its
non-members the other half's validation images of the same class, class by class. If train
and validation images were exchangeable, every class would read 0.5 on average. One draw per
seed: the seed's validation halves and null network, as a run of that seed draws them (of a
run whose recipe is the dataset's FedAvg at `--scale`); members: each class's training images
(at most 256, drawn with numpy's `default_rng(seed)`, not a run's per-client draw), as many as
the first half holds of that class.

    python docs/findings/null_control.py --dataset pneumoniamnist --data-root DIR --seeds 12

prints each seed's AUC per class (and their mean weighted by members, as the audit's
headline weighs its artefacts) and their mean, standard deviation and standard error, then
how many validation images are exact copies of training images
(docs/findings/privacy.md, "Why the null control fails on PneumoniaMNIST")."""
import argparse

import numpy as np
import torch

from bench.config import parse_overrides, resolve
from bench.methods.privacy import (_auc, balanced, null_epochs, null_network, pair_scores,
                                   validation_halves)
from bench.runner import run_context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--scale", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for seed in range(args.seeds):
        config = resolve(args.dataset, "fedavg", "iid", seed, parse_overrides([]), args.scale)
        ctx, _ = run_context(config, torch.device("cpu"), args.data_root)
        first, second = validation_halves(ctx)
        network = null_network(ctx, second, null_epochs(ctx))
        rng = np.random.default_rng(seed)
        y_train = ctx.data.y_train
        row, sizes = [], []
        for c in range(int(y_train.max()) + 1):
            m, n = balanced(torch.nonzero(y_train == c).flatten(), y_train,
                            ctx.data.y_val[torch.as_tensor(first)], rng)
            members, non_members = pair_scores(ctx, network, m, first[n])
            row.append(_auc(members, non_members))
            sizes.append(len(m))
        row.append(float(np.average(row, weights=sizes)))  # as the audit's headline weighs
        rows.append(row)
        print(f"seed {seed}: AUC per class " + " ".join(f"{a:.3f}" for a in row[:-1])
              + f", members-weighted {row[-1]:.3f}", flush=True)
    x_train, x_val = ctx.data.x_train.cpu().numpy(), ctx.data.x_val.cpu().numpy()
    train = {image.tobytes() for image in x_train}
    copies = sum(image.tobytes() in train for image in x_val)
    r = np.array(rows)
    for c in range(r.shape[1]):
        print(f"{'all classes' if c == r.shape[1] - 1 else f'class {c}'}: mean {r[:, c].mean():.3f}, sd {r[:, c].std(ddof=1):.3f}, "
              f"se {r[:, c].std(ddof=1) / np.sqrt(len(r)):.3f} over {len(r)} seeds")
    print(f"{copies} of the {len(x_val)} validation images are exact copies of training images")


if __name__ == "__main__":
    main()
