"""Benchmarks of jacket against JAX, runnable from an installed package (``jacket bench``) or
from the scripts in ``benchmarks/``.

Every benchmark module has the same shape::

    NAME                          short name, also the results file name
    config(full=False) -> dict    the sizes and repeats of a quick (or full) run; "roofline" holds
                                  keyword arguments for timing.roofline (empty: its defaults)
    n_steps(config) -> int        how many progress ticks ``run`` will make
    run(config, out=None, tick=None) -> dict
                                  times, prints a table, writes <out>/<device>/NAME.json + .png,
                                  and returns the JSON record; ``tick(label)`` is called per case

Timing method and results layout: :mod:`jacket_bench.timing` and benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import importlib

__all__ = ["BENCHMARKS", "load", "select_device", "script_main"]

BENCHMARKS = ("grad", "associativity", "orders", "planning", "scaling", "curvature", "memory")


def load(name: str):
    """The module of benchmark ``name``."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
    return importlib.import_module(f"jacket_bench.{name}")


def select_device(kind: str | None) -> str:
    """Make ``kind`` ("cpu" or "gpu") JAX's default device; returns a description of it.

    Raises ``RuntimeError`` with a clear message when a GPU is asked for and JAX sees none.
    """
    import jax
    if kind in (None, ""):
        dev = jax.devices()[0]
        return f"{dev.platform} ({dev.device_kind})"
    if kind not in ("cpu", "gpu"):
        raise ValueError(f"--device must be 'cpu' or 'gpu', got {kind!r}")
    try:
        devices = jax.devices(kind)
    except RuntimeError as err:
        devices, why = [], str(err).splitlines()[0]
    else:
        why = ""
    if not devices:
        raise RuntimeError(f"--device {kind}: JAX finds no {kind.upper()} on this machine "
                           f"(available: {', '.join(sorted({d.platform for d in jax.devices()}))}). "
                           f"Install a CUDA-enabled jaxlib, or run with --device cpu. {why}".rstrip())
    jax.config.update("jax_default_device", devices[0])
    return f"{devices[0].platform} ({devices[0].device_kind})"


def script_main(name: str, argv=None, default_out: str | None = None) -> int:
    """Entry point of ``benchmarks/<name>.py``: ``--full``, ``--device``, ``--out`` (default
    ``default_out``, else benchmarks/results under the working directory)."""
    module = load(name)
    parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=(module.__doc__ or "").split("\n")[0])
    parser.add_argument("--full", action="store_true", help="full sweep (default: quick sizes)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None, help="JAX platform to run on")
    parser.add_argument("--out", default=default_out, help="results folder; files go to OUT/<device>/ "
                        f"(default: {default_out or 'benchmarks/results'})")
    args = parser.parse_args(argv)
    try:
        print("device:", select_device(args.device))
    except RuntimeError as err:
        parser.error(str(err))
    record = module.run(module.config(full=args.full), out=args.out)
    print("results:", ", ".join(p for p in record.get("files", {}).values() if p))
    return 0
