"""Scaling over 1, 2, 4 devices (simulated on a CPU): sharded Jacobians and data-parallel gradients.

Usage: python benchmarks/scaling.py [--full] [--device cpu|gpu] [--out DIR]
The implementation is jacket_bench.scaling (also run by `jacket bench --only scaling`).
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
    sys.exit(script_main("scaling", default_out=os.path.join(HERE, "results")))
