"""`python -m bench`.

Started from the repository root, Python puts the root on sys.path, where our `datasets/`
folder would shadow Hugging Face's `datasets` for any library importing it. The suite's own
code imports it as `bench.datasets`, so the root entry is dropped before anything else runs.
"""
import os
import sys

_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]

try:
    from bench.cli import main
except ImportError as e:  # running from a clone without `pip install -e .`
    print(f"bench: error: {e}; install the suite first: pip install -e .", file=sys.stderr)
    sys.exit(2)

sys.exit(main())
