"""This checkout's engine against an earlier commit's, alternating in one process.

    python benchmarks/compare_commits.py REV [--out FILE]

Extracts ``src/jacket`` of REV (git archive) into a temporary folder as the package
``jacket_old`` (the engine imports itself relatively, so both load side by side), then times
both on the same arrays: value_and_grad of the grad benchmark's headline MLP, the Jacobian of
the orders benchmark's families in forward, reverse and optimal order, and the associativity
benchmark's scalar chain at D = 1024. Chains are built from Dense/activation layers, which both
APIs share. Prints and writes the medians of same-round time ratios (this checkout / REV).
"""
import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("rev", help="the earlier commit, e.g. HEAD~1")
parser.add_argument("--out", default=None, help="JSON file to write (default: print only)")
args = parser.parse_args()
root = Path(__file__).resolve().parents[1]
folder = Path(tempfile.mkdtemp())
archive = subprocess.run(["git", "archive", args.rev, "src/jacket"], cwd=root, check=True, capture_output=True).stdout
(folder / "old.tar").write_bytes(archive)
with tarfile.open(folder / "old.tar") as tar:
    tar.extractall(folder)
(folder / "src" / "jacket").rename(folder / "jacket_old")
sys.path.insert(0, str(folder))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jacket as new  # noqa: E402
import jacket_old as old  # noqa: E402
from jacket_bench.timing import alternate  # noqa: E402


def mlp_of(jk, widths):
    """Dense layers through ``widths``, tanh between them, from package ``jk`` (old or new API)."""
    layers = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(jk.Dense(a, b))
        if k < len(widths) - 2:
            layers.append(jk.Tanh())
    return jk.Chain(layers)


def heavy_of(jk, w):
    """The orders benchmark's elementwise-heavy chain, from package ``jk``."""
    return jk.Chain([jk.Dense(w, w), jk.Tanh(), jk.LayerNorm(w), jk.GELU(), jk.Sigmoid(), jk.Softplus(),
                     jk.LayerNorm(w), jk.Tanh(), jk.Softmax(), jk.Sigmoid(), jk.LayerNorm(w), jk.Tanh()])


rows = []
key = jax.random.key(0)
# gradient, MLP 784-512-512-10 batch 128
widths = [784, 512, 512, 10]
cn, co = mlp_of(new, widths), mlp_of(old, widths)
params = cn.init(key)
x = jax.random.normal(key, (128, 784))
labels = jnp.arange(128) % 10
r = alternate({"new": new.value_and_grad(cn, new.SoftmaxCrossEntropy()),
               "old": old.value_and_grad(co, old.SoftmaxCrossEntropy())}, (params, x, labels), repeats=15,
              baseline="old")
rows.append(("value_and_grad 784-512-512-10 b128", r["ratio"]["new"]))
# Jacobians: the orders benchmark's families, every order the planner or the user names
families = {"uniform": [256] * 7, "funnel": [1024, 512, 256, 64, 8], "expanding": [8, 64, 256, 1024],
            "bottleneck": [1024, 1024, 16, 1024, 1024]}
chains = {name: (mlp_of(new, w), mlp_of(old, w)) for name, w in families.items()}
chains["elementwise-heavy"] = (heavy_of(new, 256), heavy_of(old, 256))
for name, (cn, co) in chains.items():
    params = cn.init(key)
    x0 = jax.random.normal(key, (cn.dims[0],))
    for order in ("forward", "reverse", "optimal"):
        r = alternate({"new": lambda p, v, c=cn, o=order: c.jacobian(p, v, o),
                       "old": lambda p, v, c=co, o=order: c.jacobian(p, v, o)}, (params, x0), repeats=11,
                      baseline="old")
        rows.append((f"jacobian {name} {order}", r["ratio"]["new"]))
# associativity: a scalar 4-block chain at D = 1024
cn, co = mlp_of(new, [1024] * 5 + [1]), mlp_of(old, [1024] * 5 + [1])
params = cn.init(key)
x0 = jax.random.normal(key, (1024,))
for order in ("reverse", "forward"):
    r = alternate({"new": lambda p, v, o=order: cn.jacobian(p, v, o), "old": lambda p, v, o=order: co.jacobian(p, v, o)},
                  (params, x0), repeats=11, baseline="old")
    rows.append((f"associativity D=1024 {order}", r["ratio"]["new"]))
for name, ratio in rows:
    print(f"{name:45s} new/old time ratio {ratio:.3f}")
if args.out:
    commit = subprocess.run(["git", "rev-parse", args.rev], cwd=root, check=True, capture_output=True, text=True)
    Path(args.out).write_text(json.dumps({
        "device": f"{jax.devices()[0].platform} ({jax.devices()[0].device_kind})", "jax_version": jax.__version__,
        "against": commit.stdout.strip(), "what": "time of this checkout over REV's: median of same-round ratios",
        "rows": [{"case": n, "new_over_old": q} for n, q in rows]}, indent=1) + "\n")
