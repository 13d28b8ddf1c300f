"""One module per command of `python -m bench`; each has `add_parser(sub)` and `main(args)`."""
