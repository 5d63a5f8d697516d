"""``jacket check``: the rule checker (``jacket.testing.check_layer``) over layers, as a table.

Without arguments it checks every built-in layer at the widths of ``--widths`` and every image,
sequence, glue and block built-in at its registry shape (``jacket.registry.SHAPED``), in float32
and float64. With ``MODULE:CLASS`` arguments it checks those classes instead, each built with no
arguments or with ``--args`` (JSON: a list of positional arguments, an object of keyword
arguments, or a single number); modules are found in the current directory or among the
installed packages. For example::

    jacket check mypkg.layers:Sine
    jacket check mypkg.layers:Scale --args '[4]'
    jacket check mypkg.layers:Scale --args '{"features": 4}'

One row per layer, width, dtype and rule shows the worst comparison of that rule (``-v``: every
comparison). The exit code is 1 if any comparison fails, 2 if a layer cannot be loaded.
"""
from __future__ import annotations

import sys

HELP = "check layers' hand-written jvp, vjp and jacobian rules against JAX autodiff and finite differences"
WIDTHS = (3, 8)
DTYPES = ("float32", "float64")


def add_arguments(parser) -> None:
    parser.add_argument("layers", nargs="*", metavar="MODULE:CLASS",
                        help="layer classes to check, e.g. mypkg.layers:Sine (default: every built-in layer)")
    parser.add_argument("--args", default=None, metavar="JSON",
                        help="constructor arguments for the classes given: a JSON list (positional), "
                             "object (keywords) or number, e.g. '[4, 3]' (default: none)")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), metavar="N,N",
                        help="input widths, for layers that take any width (default: %(default)s); the shaped "
                             "built-ins (images, sequences, blocks) use their registry shapes")
    parser.add_argument("--in-shape", default=None, metavar="N,N,...",
                        help="one input shape instead of --widths, e.g. 4,8 for a (4, 8) sequence; "
                             "the width-generic built-ins then act on its last axis (shaped ones are skipped)")
    parser.add_argument("--only", default=None, metavar="NAME,NAME",
                        help="check only these built-ins, by registry name (e.g. dense,conv2d,residual)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), metavar="DTYPE,DTYPE",
                        help="dtypes to check in (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one row per comparison, not per rule")


def _load(spec: str, args_json):
    """``module:Class`` -> an instance, built from ``--args``."""
    import importlib
    import json
    import os

    from ..core import Layer
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as with `python -m`: a module in the current directory is found
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"{spec!r} is not of the form module:Class")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ValueError(f"{spec!r}: {class_name} in {module_name} is not a jacket.Layer subclass")
    args = [] if args_json is None else json.loads(args_json)
    if isinstance(args, dict):
        return cls(**args)
    return cls(*(args if isinstance(args, list) else [args]))


def _summary(report, width, dtype, verbose):
    """Table rows: every comparison (verbose), else the worst of each rule."""
    def badness(row):
        return float("inf") if not row.passed else row.max_error / row.tolerance if row.tolerance else 0.0
    if verbose:
        chosen = report.rows
    else:
        worst = {}
        for row in report.rows:
            if row.rule not in worst or badness(row) > badness(worst[row.rule]):
                worst[row.rule] = row
        chosen = list(worst.values())
    return [(r.layer, width, dtype, r.case.split(" (")[0] if not verbose else r.case, r.rule, r.argument,
             r.max_error, r.tolerance, r.passed) for r in chosen]


def run(args) -> int:
    from .._table import format_table
    from ..registry import LAYERS, SHAPED, layer as registry_entry
    from ..testing import Report, RuleError, check_layer

    try:
        shapes = [tuple(int(n) for n in args.in_shape.split(",") if n.strip())] if args.in_shape else \
            [(int(w),) for w in args.widths.split(",") if w.strip()]
    except ValueError:
        print(f"jacket check: --widths and --in-shape take comma-separated integers, got "
              f"{args.in_shape or args.widths!r}", file=sys.stderr)
        return 2
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if args.layers:
        try:
            layers = [_load(spec, args.args) for spec in args.layers]
        except Exception as err:  # noqa: BLE001 - import or construction error: say which, exit 2
            print(f"jacket check: cannot load a layer: {type(err).__name__}: {err}", file=sys.stderr)
            return 2
        jobs = [(layer, shape) for layer in layers
                for shape in ([layer.input_shape()] if layer.input_shape() is not None else shapes)]
    else:
        try:
            names = None if args.only is None else [registry_entry(n.strip()).name for n in args.only.split(",")
                                                    if n.strip()]
        except ValueError as err:
            print(f"jacket check: --only: {err}", file=sys.stderr)
            return 2
        wanted = [e for e in LAYERS if names is None or e.name in names]
        jobs = [(e.build(shape[-1], shape[-1] + 2), shape) for shape in shapes for e in wanted]
        if not args.in_shape:  # the shaped built-ins at their own shapes
            jobs += [(e.build(), e.in_shape) for e in SHAPED if names is None or e.name in names]

    rows, notes, failed, count = [], [], [], 0
    for layer, shape in jobs:
        width = "×".join(map(str, shape))
        for dtype in dtypes:
            try:
                report = check_layer(layer, in_shape=shape, dtype=dtype)
            except RuleError as err:
                report = err.report
            except Exception as err:  # noqa: BLE001 - e.g. apply itself raises: a failure of this layer
                report = Report()
                failed.append(f"{layer!r} ({dtype}): {type(err).__name__}: {err}")
            rows += _summary(report, width, dtype, args.verbose)
            notes += [n for n in report.notes if n not in notes]
            failed += [r.describe() for r in report.failures]
            count += len(report.rows)
    print(format_table(("layer", "width", "dtype", "case", "rule", "argument", "max error", "tolerance", "pass"),
                       rows, title=f"jacket check: {len(jobs)} layer(s) × {len(dtypes)} dtype(s)"))
    for note in notes:
        print("note:", note)
    if failed:
        print(f"FAILED: {len(failed)} failure(s) in {count} comparisons; first: {failed[0]}")
        return 1
    print(f"all {count} comparisons passed")
    return 0
