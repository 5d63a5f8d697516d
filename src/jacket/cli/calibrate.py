"""``jacket calibrate``: measure this device's rates for the calibrated cost model and cache them.

Prints what it measured (the raw seconds and the rates) and where it stored them; later
``jacket.plan(chain, 1, cost="calibrated")``, ``jacket plan --cost calibrated`` and
``order="fastest"`` read the file instead of measuring. ``--show`` prints the cached rates
without measuring.
"""
from __future__ import annotations

HELP = "measure this device's rates for the calibrated cost model (under a minute on a CPU) and cache them"

UNITS = {"call": ("µs per compiled call (once per plan)", 1e6),
         "sweep_fma": ("ps per fma, rules in a vmapped sweep of ≥ 64 seeds", 1e12),
         "sweep_fma_few": ("ps per fma, rules in a sweep of fewer seeds", 1e12),
         "sweep_io": ("ps per activation float a seed moves", 1e12),
         "mm_fma": ("ps per fma, dense products (sides ≥ 64)", 1e12),
         "skinny_fma": ("ps per fma, skinny dense products", 1e12),
         "mm_io": ("ps per float a dense product moves", 1e12),
         "struct_fma": ("ps per fma, structured products / JAC", 1e12),
         "step": ("µs per plan step", 1e6)}


def add_arguments(parser):
    parser.add_argument("--device", choices=("cpu", "gpu"), default=None,
                        help="JAX platform to calibrate (default: JAX's default device)")
    parser.add_argument("--show", action="store_true", help="print the cached calibration, measure nothing")


def _table(rates, measured=None, predicted=None) -> str:
    from .._table import format_table
    rows = [(name, float(getattr(rates, name) * scale), what) for name, (what, scale) in UNITS.items()]
    text = format_table(["rate", "value", "unit"], rows)
    if measured:
        predicted = predicted or {}
        text += "\n\n" + format_table(["measured program", "ms", "fitted ms"],
                                       [(k, v * 1e3, predicted.get(k, float("nan")) * 1e3) for k, v in measured.items()])
    return text


def run(args) -> int:
    import json
    import sys
    from jacket_bench import select_device  # the same platform choice as `jacket bench`
    from ..tuning import calibrate, load_rates
    from ..tuning._calibrate import calibration_path
    try:
        print("device:", select_device(args.device))
    except RuntimeError as err:
        print(f"jacket calibrate: {err}")
        return 2
    path = calibration_path()
    if args.show:
        rates, why = load_rates()
        if rates is None:
            print(f"no usable calibration at {path}: {why}; run `jacket calibrate`")
            return 1
        data = json.loads(path.read_text())
        print(f"calibration: {path}\n\n{_table(rates, data.get('measured_s'), data.get('predicted_s'))}")
        return 0
    rates = calibrate(progress=sys.stderr.isatty())
    data = json.loads(path.read_text())
    print(f"\n{_table(rates, data.get('measured_s'), data.get('predicted_s'))}\n\nstored in {path} "
          f"(JACKET_CACHE_DIR overrides the folder)")
    return 0
