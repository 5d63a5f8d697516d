"""value_and_grad: jacket against jax.value_and_grad (ratio, GFLOP/s).

Usage: python benchmarks/grad.py [--full] [--device cpu|gpu] [--out DIR]
The implementation is jacket_bench.grad (also run by `jacket bench --only grad`).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import jacket  # noqa: F401  (installed)
except ImportError:  # a plain checkout: use its src/
    sys.path.insert(0, os.path.join(HERE, os.pardir, "src"))

from jacket_bench import script_main

if __name__ == "__main__":
    sys.exit(script_main("grad", default_out=os.path.join(HERE, "results")))
