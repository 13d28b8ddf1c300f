"""One module per command of `python -m bench`; each has `add_parser(sub)` and `main(args)`.

HELP is each command's one line in `python -m bench --help`: the top-level help is built from
it alone, without importing the command modules (and torch behind them), and each module's
`add_parser` uses the same line."""
HELP = {
    "run": "run a grid of experiments (default: the digits grid)",
    "estimate": "GPU-hours of a grid per phase, before running it",
    "table": "tables of the stored runs (Markdown and CSV)",
    "report": "tables (Markdown, CSV, LaTeX) and figures",
    "check": "compare stored results with a reference, cell by cell",
    "unlearn": "forget clients of a stored federatedfactory or fedcvae run",
    "data": "state of the data root: what is present, how to get the rest",
    "prepare": "one-time preprocessing of a dataset (isic2019)",
    "list": "registered methods, datasets, splits and grids",
    "status": "the runs in progress, from their live logs",
}


class UsageError(Exception):
    """A bad command line (the message says what to do)."""
