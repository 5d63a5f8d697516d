"""Memory: the plan bytes model against XLA's memory analysis, and checkpointed backprop.

Usage: python benchmarks/memory.py [--full] [--device cpu|gpu] [--out DIR]
The implementation is jacket_bench.memory (also run by `jacket bench --only memory`).
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
    sys.exit(script_main("memory", default_out=os.path.join(HERE, "results")))
