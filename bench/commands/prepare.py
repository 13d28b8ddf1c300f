"""`python -m bench prepare isic2019`: one-time preprocessing of a dataset."""
from __future__ import annotations

from . import HELP
from .common import UsageError, say


def add_parser(sub) -> None:
    prep = sub.add_parser("prepare", help=HELP["prepare"])
    prep.add_argument("dataset", choices=("isic2019",))
    prep.add_argument("--resolution", type=int, default=128, help="side in pixels (default 128)")
    prep.add_argument("--data-root", default=None)


def main(args) -> int:
    from tqdm.auto import tqdm

    from ..datasets import isic2019
    from ..datasets.root import data_root

    if args.resolution < 8:
        raise UsageError(f"--resolution {args.resolution}: must be at least 8")
    root = data_root(args.data_root)
    n = len(isic2019._read_tables(root))
    with tqdm(total=n, desc="resizing images", unit="img") as bar:
        path = isic2019.prepare(root, args.resolution, bar)
    say(f"isic2019: {n} images at {args.resolution} px -> {path}")
    return 0
