"""The comparisons of one check: the random directions of each case, the rules against their
references (JAX autodiff, else finite differences), inner-product tests, and the Jacobian."""
from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ._cases import _normal, _put
from ._compiled import _attempt, _pullbacks, _references, _references_one_by_one, _rules, _rules_one_by_one
from ._finite import _fd_from_pullbacks, _fd_points, _fd_pullback, _finite_difference
from ._report import Row


class _Mismatch(Exception):
    """A rule's result has the wrong shape or structure (reported, not raised)."""


def _why(err) -> str:
    if isinstance(err, _Mismatch):
        return str(err)
    first = (str(err).strip().splitlines() or [""])[0]
    return f"the call raised {type(err).__name__}: {first[:200]}"


def _compare(got, expected, rtol, atol):
    """``(max error, tolerance, detail)``, norm-wise: tolerance = atol + rtol · max|expected|."""
    expected = np.asarray(expected, np.float64)
    tol = atol + rtol * (float(np.max(np.abs(expected))) if expected.size else 0.0)
    if isinstance(got, Exception):
        return np.inf, tol, _why(got)
    if got is None:
        return np.inf, tol, "the rule returned None"
    got = np.asarray(got, np.float64)
    if got.shape != expected.shape:
        return np.inf, tol, f"the rule returned shape {got.shape}, expected {expected.shape}"
    if not got.size:
        return 0.0, tol, ""
    err = np.abs(got - expected)
    i = np.unravel_index(np.argmax(np.where(np.isnan(err), np.inf, err)), err.shape)
    where = f" at index {tuple(int(k) for k in i)}" if i else ""
    return float(err[i]), tol, f"worst{where}: expected {expected[i]:.6g}, got {got[i]:.6g}"


def _compare_inner(a1, b1, a2, b2, rtol, atol, names):
    """Compare ⟨a1, b1⟩ with ⟨a2, b2⟩; the tolerance scales with Σ|a||b|, the size of their rounding error."""
    for v in (a1, b1, a2, b2):
        if isinstance(v, Exception):
            return np.inf, atol, _why(v)
    a1, b1, a2, b2 = (np.asarray(v, np.float64) for v in (a1, b1, a2, b2))
    if a1.shape != b1.shape or a2.shape != b2.shape:
        return np.inf, atol, f"shapes {a1.shape}, {b1.shape}, {a2.shape}, {b2.shape} do not pair up"
    lhs, rhs = float(np.vdot(a1, b1)), float(np.vdot(a2, b2))
    tol = atol + rtol * float(np.vdot(np.abs(a1), np.abs(b1)) + np.vdot(np.abs(a2), np.abs(b2)))
    return abs(lhs - rhs), tol, f"{names[0]} = {lhs:.6g} but {names[1]} = {rhs:.6g}"


class _Draw(NamedTuple):
    """The random vectors of one case, and the directions built from them."""

    x_dot: object
    y_bar: object
    paths: list        # "params['w']", … one per params leaf
    leaf_dots: list    # a tangent per params leaf
    groups: list       # (argument, leaf indices): each leaf alone (a layer), or all together (a chain)
    directions: list   # (argument, x_dot or None, params_dot or None)
    x_dots: object     # the directions stacked, zeros for None, for one vmapped jax.jvp
    params_dots: object
    second: list = []  # (argument, x_dot, params_dot, y_bar_dot) for vjp_jvp; empty without the rule
    second_dots: object = None  # their (x_dots, params_dots, y_bar_dots) stacked, zeros for None


def _draw(s, params, x, rng, per_leaf):
    y = _attempt(jax.eval_shape, s.apply, params, x)  # shape and dtype, nothing computed
    x_dot, y_bar = _normal(rng, x), _normal(rng, s.apply(params, x) if isinstance(y, Exception) else y)
    with_paths, treedef = jax.tree_util.tree_flatten_with_path(params)
    paths = [f"params{jax.tree_util.keystr(path)}" for path, _ in with_paths]
    leaf_dots = [_normal(rng, a) for _, a in with_paths]
    zero_dots = [_put(np.zeros(a.shape, a.dtype)) for a in leaf_dots]
    everything = list(range(len(paths)))
    groups = [(path, [i]) for i, path in enumerate(paths)] if per_leaf else [("params", everything)] if paths else []

    def params_dot(members):  # the leaves in members set, the others zero
        return treedef.unflatten([d if j in members else z for j, (d, z) in enumerate(zip(leaf_dots, zero_dots))])
    # x alone, params with x_dot=None, then both together
    directions = [("x", x_dot, None)] + [(name, None, params_dot(members)) for name, members in groups]
    if paths:
        directions.append(("x and params", x_dot, params_dot(everything)))
    x_dots = _put(np.stack([np.zeros(x.shape, x.dtype) if x_d is None else np.asarray(x_d)
                            for _, x_d, _ in directions]))
    params_dots = _stacked([params_dot([]) if p_d is None else p_d for _, _, p_d in directions])
    if not s.second_order:  # nothing drawn: the random stream of the other checks is unchanged
        return _Draw(x_dot, y_bar, paths, leaf_dots, groups, directions, x_dots, params_dots)
    # vjp_jvp along x_dot alone (params_dot, y_bar_dot None: the symbolic-zero paths), then all
    # three together (every term); more directions would cost compile time and catch little more
    y_bar_dot, all_params = _normal(rng, y_bar), params_dot(everything)
    second = [("x_dot", x_dot, None, None),
              ("x_dot, params_dot, y_bar_dot" if paths else "x_dot, y_bar_dot", x_dot,
               all_params if paths else None, y_bar_dot)]
    second_dots = (_put(np.stack([np.zeros(x.shape, x.dtype) if x_d is None else np.asarray(x_d)
                                  for _, x_d, _, _ in second])),
                   _stacked([params_dot([]) if p_d is None else p_d for _, _, p_d, _ in second]),
                   _put(np.stack([np.zeros(y_bar.shape, y_bar.dtype) if yb_d is None else np.asarray(yb_d)
                                  for _, _, _, yb_d in second])))
    return _Draw(x_dot, y_bar, paths, leaf_dots, groups, directions, x_dots, params_dots, second, second_dots)


def _stacked(trees):
    """Trees of one structure stacked leaf by leaf along a new leading axis (numpy, then one transfer)."""
    return jax.tree_util.tree_map(lambda *leaves: _put(np.stack([np.asarray(a) for a in leaves])), *trees)


def _check_cases(s, params, cases, rng, tols, report, per_leaf=True):
    """Every comparison for every case. All rules of all cases run in one compiled call, all
    references in another (compiling dominates the run time); one by one where that fails."""
    # the Jacobian is defined for one example: take the unbatched case, else example 0 of the batch
    jac = next((i for i, (_, x) in enumerate(cases) if tuple(x.shape) == s.in_shape), 0) if s.jacobian else None
    draws = [_draw(s, params, x, rng, per_leaf) for _, x in cases]
    # vjp_jvp's finite differences: the vjp at shifted points in float64, inside the rules' own
    # program for a float64 check, else in one float64 program for all cases
    fd = [_fd_points(params, x, d.y_bar, [t[1:] for t in d.second]) if d.second else None
          for (_, x), d in zip(cases, draws)]
    in_program = all(np.dtype(x.dtype) == np.float64 for _, x in cases)
    rule_inputs = tuple((x, d.y_bar, tuple((x_d, p_d) for _, x_d, p_d in d.directions),
                         tuple((x_d, p_d, yb_d) for _, x_d, p_d, yb_d in d.second),
                         f[0] if in_program and f is not None else None)
                        for (_, x), d, f in zip(cases, draws, fd))
    own = _attempt(_rules, s, params, rule_inputs, jac)
    if isinstance(own, Exception):
        own = [_rules_one_by_one(s, params, *inputs, i == jac) for i, inputs in enumerate(rule_inputs)]
    ref_inputs = tuple((x, d.y_bar, d.x_dots, d.params_dots, d.second_dots) for (_, x), d in zip(cases, draws))
    refs = _attempt(_references, s, params, ref_inputs, jac)
    if isinstance(refs, Exception):
        refs = [_references_one_by_one(s, params, *inputs, i == jac) for i, inputs in enumerate(ref_inputs)]
    # A float32 check computes vjp_jvp's finite differences (a float64 program of their own) only
    # where JAX cannot differentiate apply: beside a working reference they would add a compile
    # and little else (the float64 check runs them inside its rules' program).
    missing = [i for i, f in enumerate(fd) if f is not None and "fd_pullbacks" not in own[i]
               and isinstance(refs[i].get("vjp_jvp"), Exception)]
    if missing:
        pulled = _attempt(_pullbacks, s, [fd[i][0] for i in missing])
        for k, i in enumerate(missing):
            own[i]["fd_pullbacks"] = pulled if isinstance(pulled, Exception) else pulled[k]
    for own_i, f in zip(own, fd):
        if f is not None:
            pulled = own_i.pop("fd_pullbacks", None)
            own_i["fd_vjp_jvp"] = None if pulled is None else pulled if isinstance(pulled, Exception) else \
                _attempt(_fd_from_pullbacks, pulled, f[1])
    for i, ((case, x), draw, own_i, refs_i) in enumerate(zip(cases, draws, own, refs)):
        _compare_case(s, params, case, x, draw, own_i, refs_i, tols, report, i == jac)


def _joined(arrays):
    """One flat float64 vector from several arrays (or the first exception among them)."""
    bad = [a for a in arrays if isinstance(a, Exception)]
    return bad[0] if bad else np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in arrays] or [np.zeros(0)])


def _compare_case(s, params, case, x, draw, own, refs, tols, report, jacobian):
    def add(rule, argument, reference, result, label=case):
        err, tol, detail = result
        report.rows.append(Row(s.name, label, rule, argument, reference, err, tol, bool(err <= tol), detail))

    def fall_back(what, err):  # one note per subject and rule, not per case
        if not any(n.startswith(f"{s.name}: the {what} rule") for n in report.notes):
            report.notes.append(f"{s.name}: the {what} rule is compared with central finite differences in "
                                f"float64, as JAX cannot differentiate apply ({_why(err)})")

    ad, fd_tols = tols
    x_dot, y_bar, paths, leaf_dots, groups, directions = draw[:6]
    args = [arg for arg, _, _ in directions]
    fd = [_finite_difference(s, params, x, p_d, x_d) for _, x_d, p_d in directions]
    jvp_ref, jvp_name, jvp_tols = refs["jvp"], "jax.jvp", ad
    if isinstance(jvp_ref, Exception):  # apply calls numpy, jax.pure_callback, …
        fall_back("jvp", jvp_ref)
        jvp_ref, jvp_name, jvp_tols = fd, "finite differences", fd_tols
    else:
        jvp_ref = list(np.asarray(jvp_ref))  # one array per direction
    vjp_ref, vjp_name, vjp_tols = refs["vjp"], "jax.vjp", ad
    if isinstance(vjp_ref, Exception):
        fall_back("vjp", vjp_ref)
        vjp_ref, vjp_name, vjp_tols = _fd_pullback(s, params, x, y_bar), "finite differences", fd_tols
    x_bar, params_bar = _unpack_vjp(own["vjp"], jax.tree_util.tree_structure(params), len(paths), add)

    for arg, got, ref in zip(args, own["jvp"], jvp_ref):
        add("jvp", arg, jvp_name, _compare(got, ref, *jvp_tols))
    vjp_refs = [vjp_ref[1]] + jax.tree_util.tree_leaves(vjp_ref[0])
    for arg, got, ref in zip(["x"] + paths, [x_bar] + params_bar, vjp_refs):
        add("vjp", arg, vjp_name, _compare(got, ref, *vjp_tols))
    # inner-product tests pair each tangent direction (x, then each group) with its cotangent
    paired = [("x", x_bar, x_dot)] + [(name, _joined([params_bar[i] for i in members]),
                                       _joined([leaf_dots[i] for i in members])) for name, members in groups]
    for (arg, got, v), own_jvp in zip(paired, own["jvp"]):
        add("transpose", arg, "own jvp", _compare_inner(y_bar, own_jvp, got, v, *ad, ("⟨ȳ, jvp(ẋ)⟩", "⟨vjp(ȳ), ẋ⟩")))
    if jvp_name == "jax.jvp":  # otherwise the jvp rows already compare with finite differences
        for arg, got, ref in zip(args, own["jvp"], fd):
            add("finite-differences jvp", arg, "finite differences", _compare(got, ref, *fd_tols))
    if vjp_name == "jax.vjp":
        for (arg, got, v), ref in zip(paired, fd):
            add("finite-differences vjp", arg, "finite differences",
                _compare_inner(got, v, y_bar, ref, *fd_tols, ("⟨vjp(ȳ), ẋ⟩", "⟨ȳ, finite difference⟩")))
    if s.second_order:
        _check_second_order(s, params, x, draw, own, refs, tols, add, fall_back)
    elif not any(n.startswith(f"{s.name}: no second-order rule") for n in report.notes):
        report.notes.append(f"{s.name}: no second-order rule (vjp_jvp), not checked")
    if jacobian:
        label = case if tuple(x.shape) == s.in_shape else f"example 0 of {case}"
        _check_jacobian(s, params, s.one_example(x), own["jacobian"], refs["jacobian"], tols,
                        lambda *row: add(*row, label=label))


def _unpack_vjp(own_vjp, treedef, n_leaves, add, rule="vjp", names=("params_bar", "x_bar"), argument="params"):
    """``(x_bar, [leaf_bar, …])`` from what the vjp rule (or ``rule``, returning ``names``) returned;
    a wrong structure is a failed row."""
    if not isinstance(own_vjp, Exception) and not (isinstance(own_vjp, tuple) and len(own_vjp) == 2):
        own_vjp = _Mismatch(f"{rule} must return ({', '.join(names)}), got {type(own_vjp).__name__}")
    if isinstance(own_vjp, Exception):
        return own_vjp, [own_vjp] * n_leaves
    (params_bar, pb_def), x_bar = jax.tree_util.tree_flatten(own_vjp[0]), own_vjp[1]
    if pb_def != treedef and (params_bar or n_leaves):
        wrong = _Mismatch(f"{names[0]} has structure {pb_def}, params has {treedef}")
        add(rule, argument, "structure of params", (np.inf, 0.0, str(wrong)))
        return x_bar, [wrong] * n_leaves
    return x_bar, params_bar


def _check_second_order(s, params, x, draw, own, refs, tols, add, fall_back):
    """vjp_jvp along each direction of ``draw.second``: ``x_bar_dot`` and every leaf of
    ``params_bar_dot`` against the tangent of ``jax.vjp`` of apply (forward over reverse), and
    against central finite differences of the layer's own vjp (the reference when JAX cannot
    differentiate apply). Arguments read ``x, along x_dot``: the cotangent of x, its tangent along x_dot."""
    ad, fd_tols = tols
    treedef = jax.tree_util.tree_structure(params)
    fd = own["fd_vjp_jvp"]
    ref, name, ref_tols = refs["vjp_jvp"], "jax.jvp of jax.vjp", ad
    if isinstance(ref, Exception):
        fall_back("vjp_jvp", ref)
        ref, name, ref_tols = fd, "finite differences", fd_tols
    else:  # stacked: one entry per direction
        ref = [jax.tree_util.tree_map(lambda a, k=k: np.asarray(a)[k], ref) for k in range(len(draw.second))]
    for k, (direction, *_) in enumerate(draw.second):
        got_x, got_leaves = _unpack_vjp(own["vjp_jvp"][k], treedef, len(draw.paths), add, "vjp_jvp",
                                        ("params_bar_dot", "x_bar_dot"), f"params, along {direction}")
        got = [got_x] + got_leaves
        rows = [(name, ref_tols, "vjp_jvp", ref)]
        if name != "finite differences" and fd is not None:  # None: not computed (a float32 check)
            rows.append(("finite differences", fd_tols, "finite-differences vjp_jvp", fd))
        for ref_name, (rtol, atol), rule, expected in rows:
            expected = expected if isinstance(expected, Exception) else expected[k]
            for i, arg in enumerate(["x"] + draw.paths):
                want = expected if isinstance(expected, Exception) else \
                    (expected[1] if i == 0 else _leaf(expected[0], i - 1))
                add(rule, f"{arg}, along {direction}", ref_name,
                    _compare_or_fail(got[i], want, rtol, atol))


def _leaf(tree, i):
    leaves = jax.tree_util.tree_leaves(tree)
    return leaves[i] if i < len(leaves) else _Mismatch(f"the reference has {len(leaves)} params leaves")


def _compare_or_fail(got, expected, rtol, atol):
    """:func:`_compare`, or a failed comparison when the reference itself could not be computed."""
    if isinstance(expected, Exception):
        return np.inf, atol, f"no reference: {_why(expected)}"
    return _compare(got, expected, rtol, atol)


def _check_jacobian(s, params, x, got, ref, tols, add):
    n = x.size
    name, (rtol, atol) = "jax.jacfwd", tols[0]
    if isinstance(ref, Exception):
        ref = np.stack([_finite_difference(s, params, x, None, e.reshape(x.shape)).reshape(-1)
                        for e in np.eye(n)], axis=-1)
        name, (rtol, atol) = "finite differences", tols[1]
    op, dense = (got, got) if isinstance(got, Exception) else got
    add("jacobian", "x", name, _compare(dense, ref, rtol, atol))
    shape = tuple(x.shape)
    declared, returned, problem = _attempt(s.structure, shape), getattr(op, "structure", None), ""
    if isinstance(declared, Exception):
        problem = f"jacobian_structure({shape}): {_why(declared)}"
    elif tuple(declared.shape) != tuple(np.shape(ref)):
        problem = (f"jacobian_structure({shape}) declares shape {tuple(declared.shape)}, the Jacobian "
                   f"is {np.shape(ref)}")
    elif returned is not None and returned != declared:
        problem = (f"jacobian returned a {returned.describe()} operator, "
                   f"jacobian_structure({shape}) declares {declared.describe()}")
    add("jacobian", "structure", "jacobian_structure", (np.inf if problem else 0.0, 0.0, problem))
