"""Regenerate every number in notes/*.md from code.

    python notes/generate.py            # run the examples, write the numbers into the notes
    python notes/generate.py --check    # run them, verify the notes hold these numbers; exit 1 if not

A number lives between markers, ``<!-- gen:NAME -->VALUE<!-- /gen -->``; writing replaces VALUE,
so running twice changes nothing. Each value states how ``--check`` compares it:

* ``exact``: the text must match (model costs, sizes, settings: pure functions of the code);
* ``within ATOL``: a measured accuracy, which may move by a few test examples on another
  machine (float32 rounding differs between CPUs, and training amplifies it);
* ``below LIMIT``: a difference at rounding level; the claim is "≤ LIMIT", and the digits
  themselves depend on the machine, so both the noted and the fresh value must be ≤ LIMIT.

Takes about 15 s on two CPU cores (two small trainings, one gradient check per step).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import jacket
from jacket import cli
from jacket.examples import float64, logistic, mlp

NOTES = Path(__file__).resolve().parent
MARKER = re.compile(r"<!-- gen:(?P<name>[A-Za-z0-9_.-]+) -->(?P<value>.*?)<!-- /gen -->", re.S)


@dataclass(frozen=True)
class Value:
    text: str
    kind: str = "exact"        # "exact" | "within" | "below"
    bound: float = 0.0         # atol for "within", limit for "below"


def _diff(a, b) -> float:
    """Largest absolute difference over the leaves of two pytrees."""
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree_util.tree_leaves(a),
                                                               jax.tree_util.tree_leaves(b)))


def _sci(v: float) -> str:
    return "0" if v == 0 else f"{v:.1e}"


# ---- notes/backprop.md -----------------------------------------------------------------------
def logistic_values() -> dict[str, Value]:
    r = logistic.train()  # the defaults of `jacket train logistic`
    descent, adam = r.methods
    out = {
        "logistic.steps": Value(str(r.steps)), "logistic.checks": Value(str(r.checks)),
        "logistic.dtype": Value(r.dtype), "logistic.split": Value(f"{r.n_train} / {r.n_test}"),
        "logistic.gd.train": Value(f"{descent.train_accuracy:.4f}", "within", 0.02),
        "logistic.gd.test": Value(f"{descent.test_accuracy:.4f}", "within", 0.02),
        "logistic.adam.train": Value(f"{adam.train_accuracy:.4f}", "within", 0.02),
        "logistic.adam.test": Value(f"{adam.test_accuracy:.4f}", "within", 0.02),
    }
    for pair in ("engine-closed", "engine-jax", "closed-jax"):
        out[f"logistic.{pair}"] = Value(_sci(r.max_diff[pair]), "below", 1e-13)
    return out


def digits_values() -> dict[str, Value]:
    """On one float64 batch of digits, at the initial weights of the digits network: the delta
    recursion written out (``mlp.backprop_by_hand``, backprop.md) and the gradient as one vector
    θ (``ravel_pytree``, index-free.md), each against the engine and ``jax.grad``."""
    batch = 64
    with float64():
        data = mlp.load_data()
        chain = mlp.make_chain()
        loss = jacket.SoftmaxCrossEntropy()
        params = chain.init(jax.random.PRNGKey(0), dtype=jnp.float64)
        x, y = jnp.asarray(data.x_train[:batch], jnp.float64), jnp.asarray(data.y_train[:batch])

        @jax.jit  # one compilation instead of one per operation
        def gradients(params, x, y):
            hand = mlp.backprop_by_hand(chain, params, x, y)
            _, engine = jacket.value_and_grad(chain, loss)(params, x, y)
            reference = jax.grad(lambda p: loss.apply(chain.apply(p, x), y))(params)
            theta, unravel = ravel_pytree(params)
            reference_theta = jax.grad(lambda t: loss.apply(chain.apply(unravel(t), x), y))(theta)
            return hand, engine, reference, ravel_pytree(engine)[0], reference_theta

        hand, engine, reference, engine_theta, reference_theta = gradients(params, x, y)
        hand_engine, hand_jax = _diff(hand, engine), _diff(hand, reference)
        theta_diff = _diff(engine_theta, reference_theta)
    return {"delta.batch": Value(str(batch)),
            "delta.hand-engine": Value(_sci(hand_engine), "below", 1e-13),
            "delta.hand-jax": Value(_sci(hand_jax), "below", 1e-13),
            "theta.size": Value(str(engine_theta.size)), "theta.batch": Value(str(batch)),
            "theta.diff": Value(_sci(theta_diff), "below", 1e-13)}


def mlp_values() -> dict[str, Value]:
    r = mlp.train(progress=False, log=None)  # the defaults of `jacket train mlp`
    return {"mlp.epochs": Value(str(r.epochs)), "mlp.batch": Value(str(r.batch_size)),
            "mlp.lr": Value(f"{r.learning_rate:g}"), "mlp.split": Value(f"{r.n_train} / {r.n_test}"),
            "mlp.test": Value(f"{r.test_accuracy:.4f}", "within", 0.02),
            "mlp.check": Value(_sci(r.grad_check_diff), "below", 1e-6)}


# ---- notes/index-free.md ---------------------------------------------------------------------
def deep_chain(width: int) -> jacket.Chain:
    """Dense(D,D)–Tanh–Dense(D,D)–Tanh–Dense(D,1): a scalar at the end, as a loss would be."""
    return jacket.mlp([width, width, width, 1], activation="tanh")


MATRIX_PRODUCT = "(J5 (J4 (J3 (J2 J1))))"  # full Jacobians multiplied from the input side


def fma_of(chain, order, argnums=1) -> int:
    """The model fma of ``order`` for ``chain``'s Jacobian (``jacket.plan``, one float32 example)."""
    return plan_of(chain, order, argnums).fma


def plan_of(chain, order, argnums=1):
    return jacket.plan(chain, argnums, order=order)(None, jax.ShapeDtypeStruct(chain.in_shape, jnp.float32))


def index_free_costs() -> dict[str, Value]:
    """The vector × matrix against matrix × matrix table of index-free.md, from the planner."""
    rows = ["| D | reverse: vector × matrix | forward: D tangents | matrix × matrix " + MATRIX_PRODUCT
            + " | forward / reverse |", "|---:|---:|---:|---:|---:|"]
    costs = []
    for width in (64, 128, 256, 512):
        chain = deep_chain(width)
        costs.append((fma_of(chain, "reverse"), fma_of(chain, "forward"), fma_of(chain, MATRIX_PRODUCT)))
        reverse, forward, product = costs[-1]
        rows.append(f"| {width} | {reverse:,} | {forward:,} | {product:,} | {forward / reverse:.0f} |")
    growth = [last / before for last, before in zip(costs[-1], costs[-2])]  # from D = 256 to 512
    digits = mlp.make_chain()
    return {"free.table": Value("\n" + "\n".join(rows) + "\n"),
            "free.growth.reverse": Value(f"{growth[0]:.2f}"),
            "free.growth.forward": Value(f"{growth[1]:.2f}"),
            "free.growth.product": Value(f"{growth[2]:.2f}"),
            "free.reverse-order": Value(f"`{plan_of(deep_chain(64), 'reverse').order}`"),
            "free.digits.dims": Value(str(digits.dims)),
            "free.digits.reverse": Value(f"{fma_of(digits, 'reverse'):,}"),
            "free.digits.forward": Value(f"{fma_of(digits, 'forward'):,}")}


# ---- notes/cost-model.md ---------------------------------------------------------------------
SCALAR_WIDTH = 256
# (order, formula as printed, the formula in D): the note states these formulas, so they are
# checked against the planner's count here rather than trusted.
SCALAR_ORDERS = (
    ("reverse", "3D² + D", lambda d: 3 * d * d + d),
    ("(((J4 J3) J2) J1)", "3D²", lambda d: 3 * d * d),
    ("forward", "D·(3D² + D)", lambda d: d * (3 * d * d + d)),
    ("(J4 (J3 (J2 J1)))", "2D³ + D²", lambda d: 2 * d ** 3 + d * d),
)
WORKED_EXAMPLE = ["plan", "784,1024,16,1024,784", "--act", "tanh", "--compare"]


def cost_model_values() -> dict[str, Value]:
    """§3's table (four Dense layers of width D ending in a scalar) and §4's worked example,
    the output of ``jacket plan`` captured as printed."""
    d = SCALAR_WIDTH
    chain = jacket.Chain([jacket.Dense(d, d), jacket.Dense(d, d), jacket.Dense(d, d), jacket.Dense(d, 1)])
    rows = ["| order | fma | formula |", "|---|---|---|"]
    for order, formula, count in SCALAR_ORDERS:
        fma = fma_of(chain, order)
        if fma != count(d):
            raise RuntimeError(f"cost-model.md states that {order} costs {formula} = {count(d):,} fma at "
                               f"D = {d}, but jacket.plan(chain, 1, order={order!r}) costs {fma:,}")
        rows.append(f"| `{order}` | {fma:,} | {formula} |")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = cli.main(WORKED_EXAMPLE)
    if status:
        raise RuntimeError(f"`jacket {' '.join(WORKED_EXAMPLE)}` exited with status {status}")
    return {"cost.D": Value(str(d)),
            "cost.scalar_table": Value("\n" + "\n".join(rows) + "\n"),
            "cost.worked_example": Value("\n```\n" + printed.getvalue().rstrip("\n") + "\n```\n")}


# ---- notes/curvature.md -------------------------------------------------------------------------
CURVATURE_WIDTHS = [6, 8, 8, 3]


def curvature_values() -> dict[str, Value]:
    """The curvature products of a small tanh MLP with softmax cross-entropy, float64, against
    JAX's autodiff: hvp against jax.jvp of jax.grad, ggn_vp against Jᵀ (∇²loss) J v built from
    jax.jvp / jax.vjp / jax.hessian, hessian against jax.hessian (flattened)."""
    with float64():
        chain = jacket.mlp(CURVATURE_WIDTHS, activation="tanh")
        loss = jacket.SoftmaxCrossEntropy()
        params = chain.init(jax.random.PRNGKey(0), jnp.float64)
        x = jax.random.normal(jax.random.PRNGKey(1), (16, CURVATURE_WIDTHS[0]), jnp.float64)
        labels = jax.random.randint(jax.random.PRNGKey(2), (16,), 0, CURVATURE_WIDTHS[-1])
        v = jax.tree_util.tree_map(lambda a: jax.random.normal(jax.random.PRNGKey(3), a.shape, a.dtype), params)

        def total(p):
            return loss.apply(chain.apply(p, x), labels)

        @jax.jit
        def both(params, v):
            y, y_dot = jax.jvp(lambda p: chain.apply(p, x), (params,), (v,))
            u = jax.hessian(lambda z: loss.apply(z, labels))(y).reshape(y.size, y.size) @ y_dot.reshape(-1)
            ggn_ref = jax.vjp(lambda p: chain.apply(p, x), params)[1](u.reshape(y.shape))[0]
            flat, unravel = ravel_pytree(params)
            return ((jacket.hvp(chain, loss)(params, x, labels, v), jacket.ggn_vp(chain, loss)(params, x, labels, v),
                     jacket.hessian(chain, loss)(params, x, labels)),
                    (jax.jvp(jax.grad(total), (params,), (v,))[1], ggn_ref,
                     jax.hessian(lambda f: total(unravel(f)))(flat)))

        (hv, gv, h), (hv_ref, gv_ref, h_ref) = both(params, v)
        return {"curv.widths": Value("-".join(map(str, CURVATURE_WIDTHS))),
                "curv.P": Value(str(ravel_pytree(params)[0].size)),
                "curv.hvp": Value(_sci(_diff(hv, hv_ref)), "below", 1e-12),
                "curv.ggn": Value(_sci(_diff(gv, gv_ref)), "below", 1e-12),
                "curv.hessian": Value(_sci(_diff(h, h_ref)), "below", 1e-12)}


def params_jacobian_values() -> dict[str, Value]:
    """The parameter Jacobian of a small bottleneck sequence chain (the curvature benchmark's
    shape, scaled down): the model fma of forward, reverse and the optimal segmentation, the
    segments, and the largest difference of every order to jax.jacrev in float64."""
    from jacket_bench.curvature_cases import bottleneck_sequence
    with float64():
        chain = bottleneck_sequence(tokens=16, features=8, hidden=16, bottleneck=2, width=32)
        params = chain.init(jax.random.PRNGKey(0), jnp.float64)
        x = jax.random.normal(jax.random.PRNGKey(1), chain.in_shape, jnp.float64)

        @jax.jit
        def both(params, x):
            return ([jacket.jacobian(chain, 0, order=order)(params, x) for order in ("forward", "reverse", "optimal")],
                    jax.jacrev(chain, argnums=0)(params, x))
        got, expected = both(params, x)
        costs = {order: fma_of(chain, order, argnums=0) for order in ("forward", "reverse", "optimal")}
        plan = plan_of(chain, "optimal", argnums=0)
        segments = "; ".join(f"layers {step.lo}–{step.hi} {'reverse' if step.op == 'ADJ' else 'forward'}"
                             for step in plan.steps if step.op in ("TAN", "ADJ"))
        return {"pjac.shapes": Value(" → ".join("×".join(map(str, s)) for s in chain.shapes)),
                "pjac.forward": Value(f"{costs['forward']:,}"), "pjac.reverse": Value(f"{costs['reverse']:,}"),
                "pjac.optimal": Value(f"{costs['optimal']:,}"), "pjac.segments": Value(segments),
                "pjac.saving": Value(f"{costs['reverse'] / costs['optimal']:.2f}"),
                "pjac.diff": Value(_sci(max(_diff(g, expected) for g in got)), "below", 1e-12)}


# One entry per part: the function and the prefixes of the markers it fills. ``--parts`` runs a
# subset; the markers of the other parts are then left alone.
PARTS = {
    "logistic": (logistic_values, ("logistic.",)),
    "digits": (digits_values, ("delta.", "theta.")),
    "mlp": (mlp_values, ("mlp.",)),
    "free": (index_free_costs, ("free.",)),
    "cost": (cost_model_values, ("cost.",)),
    "curvature": (curvature_values, ("curv.",)),
    "params": (params_jacobian_values, ("pjac.",)),
}


def generate(parts=tuple(PARTS)) -> dict[str, Value]:
    values = {}
    for name in parts:
        values.update(PARTS[name][0]())
    return values


# ---- writing and checking --------------------------------------------------------------------
def _agrees(noted: str, fresh: Value) -> bool:
    if fresh.kind == "exact":
        return noted == fresh.text
    try:
        old, new = float(noted), float(fresh.text)
    except ValueError:
        return False
    if fresh.kind == "within":
        return abs(old - new) <= fresh.bound
    return old <= fresh.bound and new <= fresh.bound


def sync(values: dict[str, Value], check: bool, parts=tuple(PARTS), notes: Path = NOTES) -> list[str]:
    """Write ``values`` into the notes (or, with ``check``, compare); return the problems found.
    Markers of parts not in ``parts`` are left as they are."""
    prefixes = tuple(prefix for name in parts for prefix in PARTS[name][1])
    every_prefix = tuple(prefix for _, names in PARTS.values() for prefix in names)
    problems, used = [], set()
    for path in sorted(notes.glob("*.md")):
        if path.name == "README.md":  # it shows the marker syntax and holds no number
            continue
        text = path.read_text(encoding="utf-8")

        def replace(match):
            name, noted = match["name"], match["value"]
            used.add(name)
            if name not in values:
                if name.startswith(prefixes) or not name.startswith(every_prefix):
                    problems.append(f"{path.name}: marker gen:{name} has no generated value")
                return match[0]
            if check and not _agrees(noted, values[name]):
                problems.append(f"{path.name}: gen:{name} says {noted.strip()!r}, fresh value "
                                f"{values[name].text.strip()!r} ({values[name].kind} {values[name].bound or ''})")
            return f"<!-- gen:{name} -->{values[name].text}<!-- /gen -->"
        new_text = MARKER.sub(replace, text)
        if not check and new_text != text:
            path.write_text(new_text, encoding="utf-8")
            print(f"updated {path.name}")
    problems += [f"generated value {name} is used by no note" for name in sorted(set(values) - used)]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify the notes instead of writing them")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)} (default: all)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    problems = sync(generate(parts), check=args.check, parts=parts)
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print("notes in sync" if args.check else "notes written")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
