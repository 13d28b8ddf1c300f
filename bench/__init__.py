"""The suite: `python -m bench`. Importing any part of it first pins the CPU libraries'
dispatch (ATen, oneDNN, MKL) so that runs compute the same bits on any AVX2 x86-64 CPU; this
must happen before torch is imported (bench/methods/numerics.py)."""
from .methods.numerics import pin_environment

pin_environment()
