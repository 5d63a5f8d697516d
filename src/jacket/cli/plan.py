"""``jacket plan``: the accumulation plan (cost table) of a chain.

``jacket plan 784,1024,16,1024,784 --act tanh`` plans a Dense/activation chain of those widths;
``jacket plan --model transformer`` (or ``residual-mlp``, ``cnn``) one of the named architectures
of :mod:`jacket.examples.architectures`, whose blocks' inner plans appear nested in the table.
"""
from __future__ import annotations

HELP = "print the accumulation plan (cost table) of a Dense/activation chain or a named architecture"

from ..examples.architectures import ARCHITECTURES
from ..registry import ACTIVATIONS


def add_arguments(parser):
    parser.add_argument("widths", nargs="?", default=None,
                        help="comma-separated widths n_0,n_1,...,n_L (Dense layers between them)")
    parser.add_argument("--model", choices=tuple(ARCHITECTURES), default=None,
                        help="plan a named architecture instead: "
                             + "; ".join(f"{name}: {text}" for name, (_, text) in ARCHITECTURES.items()))
    parser.add_argument("--act", default=None, choices=tuple(ACTIVATIONS) + ("none",),
                        help="activation after every Dense layer but the last (default tanh; widths only)")
    parser.add_argument("--order", default="optimal",
                        help="forward | reverse | optimal | fastest (autotuned on this device) | a "
                             "bracketing such as '(J3 (J2 J1))', with inner orders for blocks such as "
                             "'J2[reverse] J1' (default optimal)")
    parser.add_argument("--wrt", choices=("x", "params"), default="x",
                        help="the Jacobian with respect to the input (default; argnums=1) or the parameters "
                             "(argnums=0; orders forward | reverse | optimal, the cheapest mixed segmentation, or "
                             "segments such as 'adj(J5..J3) tan(J2 J1)')")
    parser.add_argument("--cost", choices=("fma", "calibrated"), default="fma",
                        help="what 'optimal' minimises and the table prices: fma (default, exact) or "
                             "calibrated (predicted time from this device's rates: `jacket calibrate`)")
    parser.add_argument("--memory-limit", default=None, metavar="BYTES",
                        help="plan under a memory limit for one call (arguments, result, temporaries by the "
                             "bytes model), e.g. 64MB or 1.5GiB: the bracketing, the chunk size and the "
                             "checkpoints are chosen")
    parser.add_argument("--batch", type=int, default=1, metavar="B",
                        help="examples per call the memory is counted for (default 1)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"),
                        help="the dtype the memory is counted in (default float32)")
    parser.add_argument("--chunk", type=int, default=None, metavar="K",
                        help="run every TAN/ADJ sweep K seed vectors at a time")
    parser.add_argument("--checkpoint", default=None, metavar="K",
                        help="run every ADJ sweep under a checkpoint schedule that recomputes activations: K "
                             "segments, sqrt, two-level or binomial:B (at most B activations held)")
    parser.add_argument("--compare", action="store_true",
                        help="also print the one-line costs of forward, reverse and the two dense bracketings")
    parser.add_argument("--plot", metavar="PNG", help="save a picture of the plan tree (needs matplotlib)")


def build_chain(widths, act):
    import jacket
    return jacket.mlp(widths, activation=None if act == "none" else act)


def parse_widths(text):
    """The widths of ``jacket plan 784,1024,10``; a ValueError (printed by :func:`run`) otherwise."""
    parts = text.replace(" ", "").split(",")
    if any(not p for p in parts):
        raise ValueError(f"widths must be comma-separated integers without gaps, got {text!r} "
                         f"(an empty width at position {parts.index('') + 1})")
    try:
        widths = [int(w) for w in parts]
    except ValueError:
        raise ValueError(f"widths must be comma-separated integers, got {text!r}") from None
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"need at least two positive widths, got {text!r}")
    return widths


def _checkpoint(text):
    """``--checkpoint``: K, sqrt, two-level or binomial:B, as ``jacket.plan(checkpoint=)`` takes them."""
    if text is None or text in ("sqrt", "two-level"):
        return text
    name, _, budget = text.partition(":")
    try:
        return ("binomial", int(budget)) if name == "binomial" else int(text)
    except ValueError:
        raise ValueError(f"--checkpoint must be a number of segments, sqrt, two-level or binomial:B, "
                         f"got {text!r}") from None


def run(args) -> int:
    if (args.widths is None) == (args.model is None):
        print("jacket plan: give either widths (e.g. 784,1024,16,1024,784) or --model "
              f"({' | '.join(ARCHITECTURES)}), not both or neither")
        return 2
    if args.model:
        if args.act is not None:
            print(f"jacket plan: --act applies to a chain of widths, not to --model {args.model} (its "
                  f"activations are part of the architecture)")
            return 2
        from ..examples.architectures import build
        chain = build(args.model)
    else:
        try:
            widths = parse_widths(args.widths)
        except ValueError as err:
            print(f"jacket plan: {err}")
            return 2
        chain = build_chain(widths, args.act or "tanh")
    if args.batch < 1:
        print(f"jacket plan: --batch must be a positive number of examples, got {args.batch}")
        return 2
    import jax
    import jacket
    shape = chain.in_shape if args.batch == 1 else (args.batch,) + chain.in_shape
    x = jax.ShapeDtypeStruct(shape, args.dtype)
    try:
        checkpoint = _checkpoint(args.checkpoint)
        plan = jacket.plan(chain, 0 if args.wrt == "params" else 1, order=args.order, cost=args.cost,
                           chunk=args.chunk, memory_limit=args.memory_limit, checkpoint=checkpoint)(None, x)
    except ValueError as err:
        print(f"jacket plan: {err}")
        return 2
    print(f"chain: {chain}\n")
    print(plan)
    if args.wrt == "params":
        return 0
    if args.compare:
        from .._table import format_table
        n = len(chain)
        left = "(" * (n - 1) + f"J{n}" + "".join(f" J{i})" for i in range(n - 1, 0, -1))
        right = "".join(f"(J{i} " for i in range(n, 1, -1)) + "J1" + ")" * (n - 1)
        rows = [(name, jacket.plan(chain, 1, order=o)(None, x).fma, jacket.plan(chain, 1, order=o)(None, x).fma / plan.fma)
                for name, o in [("forward", "forward"), ("reverse", "reverse"), ("left-nested", left),
                                ("right-nested", right), ("optimal", "optimal")]]
        print("\n" + format_table(["order", "fma", "vs this plan"], rows))
    if args.plot:
        from ..planning.plot import plot_plan
        try:
            plot_plan(plan, args.plot)
        except (ImportError, OSError) as err:
            print(f"jacket plan: not saving the plan tree: {err}")
            return 1
        print(f"\nplan tree saved to {args.plot}")
    return 0
