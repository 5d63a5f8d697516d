"""The rule checker: a layer's hand-written rules against JAX autodiff and finite differences.

Signatures::

    check_layer(layer, params=None, x=None, *, key=None, in_dim=None, dtype=None, atol=None, rtol=None)
        -> Report        raises RuleError (an AssertionError carrying the Report) on any mismatch
    check_chain(chain, params=None, x=None, *, key=None, dtype=None, atol=None, rtol=None) -> Report
    layer_test(*layers, in_dim=None, dtypes=("float32", "float64"))  -> a parametrised pytest test

What is compared, for one example ``(n,)`` and for a batch ``(3, n)`` when ``x`` is not given:

=====================  ================================================================
rule                   reference
=====================  ================================================================
jvp                    ``jax.jvp`` of ``apply``: x_dot alone, each params leaf alone
                       (x_dot=None), both together
vjp                    ``jax.vjp`` of ``apply``: x_bar, each leaf of params_bar (summed
                       over the batch)
transpose              the layer's own jvp: ⟨ȳ, J ẋ⟩ = ⟨Jᵀȳ, ẋ⟩, for x and each params leaf
jacobian               ``jax.jacfwd`` at one example; ``jacobian_structure(n)`` (shape, kind)
finite-differences     central differences of ``apply`` in float64, no autodiff at all
=====================  ================================================================

If JAX cannot differentiate ``apply`` (it calls numpy, or ``jax.pure_callback``), finite
differences become the reference for jvp, vjp and jacobian, and the report says so.
Parameters come from ``layer.init(key)``, with each constant leaf (a scale of ones, an offset
of zeros) spread around its value, since at scale 1 and offset 0 a rule that drops those terms
would pass. Inputs are standard normal: a ReLU-like kink at 0 is almost never within the
finite-difference step of one. Tolerances depend on the dtype (``TOLERANCES``); ``atol``/``rtol``
replace those of the autodiff comparisons and can only loosen those of finite differences,
whose own truncation error does not shrink on request.

One line in a test file checks every layer of a project, in float32 and float64::

    test_my_layers = jacket.testing.layer_test(Sine(), Scale(4), in_dim=4)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._table import format_table

__all__ = ["check_layer", "check_chain", "layer_test", "parametrize_layers", "Report", "Row", "RuleError",
           "TOLERANCES"]

#: dtype -> ((rtol, atol) against autodiff, (rtol, atol) against finite differences)
TOLERANCES = {
    "float64": ((1e-9, 1e-12), (1e-6, 1e-8)),
    "float32": ((1e-4, 1e-5), (1e-3, 1e-4)),
    "float16": ((3e-2, 1e-2), (5e-2, 2e-2)),
    "bfloat16": ((3e-2, 1e-2), (5e-2, 2e-2)),
}
BATCH = 3
_HEADERS = ("layer", "case", "rule", "argument", "reference", "max error", "tolerance", "pass")


@dataclass(frozen=True)
class Row:
    """One comparison: ``max_error`` of the rule against ``reference``, and whether it is within ``tolerance``."""

    layer: str
    case: str
    rule: str
    argument: str
    reference: str
    max_error: float
    tolerance: float
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        text = (f"{self.layer}: rule {self.rule}, argument {self.argument}, case {self.case}: "
                f"max error {self.max_error:.3g} > tolerance {self.tolerance:.3g}")
        return text + (f"; {self.detail}" if self.detail else "") + f" (reference: {self.reference})"


@dataclass
class Report:
    """All comparisons of one check; ``str(report)`` is a table, followed by notes."""

    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list:
        return [r for r in self.rows if not r.passed]

    def __str__(self):
        rows = [(r.layer, r.case, r.rule, r.argument, r.reference, r.max_error, r.tolerance, r.passed)
                for r in self.rows]
        return "\n".join([format_table(_HEADERS, rows)] + self.notes)


class RuleError(AssertionError):
    """A rule disagrees with its reference; ``.report`` holds every comparison."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


class _Subject:
    """What is checked: ``rules``, a layer or a chain seen through the layer protocol, shown as
    ``name``. Equal and hashed by ``rules`` alone, so that the compiled helpers below are
    compiled once per layer (by value: equal layers share them) and shapes."""

    def __init__(self, name, rules):
        self.name, self.rules = name, rules
        self.apply, self.jvp, self.vjp = rules.apply, rules.jvp, rules.vjp
        self.jacobian = getattr(rules, "jacobian", None)
        self.structure = getattr(rules, "jacobian_structure", None)

    def __eq__(self, other):
        return isinstance(other, _Subject) and type(self.rules) is type(other.rules) and self.rules == other.rules

    def __hash__(self):
        return hash(self.rules)


@dataclass(frozen=True)
class _ChainRules:
    """A Chain's apply, jvp and vjp under the layer signatures (no jacobian: not checked here)."""

    chain: object

    def apply(self, params, x):
        return self.chain.apply(params, x)

    def jvp(self, params, x, y, x_dot, params_dot=None):
        return self.chain.jvp(params, x, x_dot, params_dot)[1]

    def vjp(self, params, x, y, y_bar):
        return self.chain.vjp(params, x)[1](y_bar)


# ---- public entry points -----------------------------------------------------------------
def check_layer(layer, params=None, x=None, *, key=None, in_dim=None, dtype=None, atol=None, rtol=None) -> Report:
    """Check ``layer``'s jvp, vjp and jacobian rules (module docstring) at ``params`` (default
    ``layer.init(key)``) and ``x`` (default: random, one example and a batch). Returns the
    :class:`Report`, or raises :class:`RuleError` naming the layer, rule, argument, case and worst element."""
    dtype = _resolve_dtype(dtype, x, params)
    with _x64_for(dtype):
        key, rng = _keys(key)
        params = _cast(_spread(layer.init(key), rng) if params is None else params, dtype)
        if x is None:
            required = layer.required_in_dim()
            if in_dim is not None and required is not None and int(in_dim) != required:
                raise ValueError(f"check_layer: {layer!r} takes width {required}, but in_dim={in_dim} was given")
            if required is None and in_dim is None:
                raise ValueError(f"check_layer: {layer!r} takes inputs of any width (required_in_dim() is None); "
                                 f"pass in_dim= or x=")
            cases = _random_cases(rng, required or int(in_dim), dtype)
        else:
            cases = [_given_case(x, dtype, "check_layer")]
        report = Report()
        _check_cases(_Subject(repr(layer), layer), params, cases, rng, _tolerances(dtype, rtol, atol), report)
    return _raise_if_failed(report)


def check_chain(chain, params=None, x=None, *, key=None, dtype=None, atol=None, rtol=None) -> Report:
    """Check ``Chain.jvp`` / ``Chain.vjp`` of the whole chain against JAX, then every layer with
    :func:`check_layer`'s comparisons at the chain's own activations; a failure names the first
    bad layer, counted from 1 as in ``Chain``'s messages."""
    dtype = _resolve_dtype(dtype, x, params)
    with _x64_for(dtype):
        key, rng = _keys(key)
        params = _cast(_spread(chain.init(key, dtype), rng) if params is None else tuple(params), dtype)
        cases = _random_cases(rng, chain.dims[0], dtype) if x is None else [_given_case(x, dtype, "check_chain")]
        tols = _tolerances(dtype, rtol, atol)
        report = Report()
        _check_cases(_Subject("chain", _ChainRules(chain)), params, cases, rng, tols, report, per_leaf=False)
        tapes = [_tape(chain, params, xx) for _, xx in cases]
        for i, (layer, p) in enumerate(zip(chain.layers, params), 1):
            _check_cases(_Subject(f"layer {i}: {layer!r}", layer), p,
                         [(case, tape[i - 1]) for (case, _), tape in zip(cases, tapes)], rng, tols, report)
    if report.passed:
        return report
    bad_layers = [r.layer for r in report.failures if r.layer != "chain"]
    _raise_if_failed(report, f"{chain!r}: first bad layer is {bad_layers[0]}" if bad_layers else
                     f"{chain!r}: the chain's rules disagree with JAX, yet every layer passes at its activations")


def parametrize_layers(*layers, dtypes=("float32", "float64")):
    """``pytest.mark.parametrize("layer, dtype", …)`` over layers × dtypes, ids from the reprs."""
    import pytest  # only tests need it
    return pytest.mark.parametrize("layer, dtype", [pytest.param(layer, d, id=f"{layer!r}-{d}")
                                                    for layer in layers for d in dtypes])


def layer_test(*layers, in_dim=None, dtypes=("float32", "float64"), **options):
    """A test function running :func:`check_layer` on every layer and dtype. Assign it to a
    module-level name starting with ``test``: ``test_my_layers = layer_test(Sine(), in_dim=4)``.
    ``in_dim`` is used for layers that take any width; ``options`` go to check_layer."""
    @parametrize_layers(*layers, dtypes=dtypes)
    def test_layer_rules(layer, dtype):
        check_layer(layer, in_dim=in_dim if layer.required_in_dim() is None else None, dtype=dtype, **options)
    return test_layer_rules


# ---- set-up ------------------------------------------------------------------------------
def _resolve_dtype(dtype, x, params):
    if dtype is None:
        floats = [np.asarray(a).dtype for a in jax.tree_util.tree_leaves((x, params))
                  if jnp.issubdtype(np.asarray(a).dtype, jnp.floating)]
        dtype = floats[0] if floats else jnp.float32
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"the rules can only be checked in a floating dtype, got {dtype}")
    return dtype


def _x64_for(dtype):
    """float64 arrays need x64: enable it for the duration of the check only."""
    return jax.enable_x64(True) if dtype == np.float64 else contextlib.nullcontext()


def _keys(key):
    """The JAX key for ``init`` and a numpy generator seeded from it (numpy draws compile nothing)."""
    key = jax.random.PRNGKey(0 if key is None else key) if key is None or isinstance(key, int) else key
    data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
    return key, np.random.default_rng(np.asarray(data).astype(np.uint32).ravel().tolist())


def _cast(tree, dtype):
    return jax.tree_util.tree_map(
        lambda a: _put(np.asarray(a, dtype)) if jnp.issubdtype(np.asarray(a).dtype, jnp.floating) else a, tree)


def _spread(params, rng):
    """Initial parameters, with each constant leaf (a scale of ones, an offset of zeros) spread
    around its value: at scale 1 and offset 0, a rule that drops those terms would still pass."""
    def spread(a):
        a = np.asarray(a)
        if not jnp.issubdtype(a.dtype, jnp.floating) or a.size == 0 or np.ptp(a) != 0:
            return a
        z = rng.standard_normal(a.shape)
        return (a * (1 + z / 4) if a.flat[0] != 0 else z / 2).astype(a.dtype)
    return jax.tree_util.tree_map(spread, params)


def _put(a):
    """numpy -> JAX without compiling anything (``jnp.asarray`` compiles a copy per shape)."""
    return jax.device_put(np.asarray(a))


def _normal(rng, like):
    return _put(rng.standard_normal(np.shape(like)).astype(like.dtype))


def _random_cases(rng, n, dtype):
    x = rng.standard_normal((BATCH + 1, n)).astype(dtype)  # standard normal: ReLU-like kinks at 0 are rarely near
    return [(f"single ({n},) {dtype}", _put(x[BATCH])), (f"batch ({BATCH}, {n}) {dtype}", _put(x[:BATCH]))]


def _given_case(x, dtype, where):
    x = np.asarray(x, dtype)
    if x.ndim not in (1, 2):
        raise ValueError(f"{where}: x must have shape (n,) or (batch, n), got {x.shape}")
    return (f"{'single' if x.ndim == 1 else 'batch'} {tuple(x.shape)} {dtype}", _put(x))


def _tolerances(dtype, rtol, atol):
    (ad_rtol, ad_atol), (fd_rtol, fd_atol) = TOLERANCES.get(dtype.name, TOLERANCES["float16"])
    ad = (ad_rtol if rtol is None else rtol, ad_atol if atol is None else atol)
    return ad, (max(fd_rtol, ad[0]), max(fd_atol, ad[1]))


def _raise_if_failed(report, lead=None):
    bad = report.failures
    if not bad:
        return report
    lines = ([lead] if lead else []) + [bad[0].describe()]
    if len(bad) > 1:
        lines += ["other failures:"] + ["  " + r.describe() for r in bad[1:]]
    raise RuleError("\n".join(lines + report.notes), report)


# ---- the rules and their references, each set in one compiled call ------------------------
def _rules_body(s, params, x, y_bar, directions, jacobian):
    """The rules under test: jvp along each ``(x_dot, params_dot)`` of ``directions``, the vjp of
    ``y_bar``, and with ``jacobian`` the Jacobian at one example (as returned, and dense)."""
    y = s.apply(params, x)
    out = {"jvp": [s.jvp(params, x, y, x_d, p_d) for x_d, p_d in directions], "vjp": s.vjp(params, x, y, y_bar)}
    if jacobian:
        out["jacobian"] = _jacobian_body(s, params, x)
    return out


def _jacobian_body(s, params, x):
    """The Jacobian at one example (example 0 of a batch): as returned, and dense."""
    x1 = x if x.ndim == 1 else x[0]
    op = s.jacobian(params, x1, s.apply(params, x1))
    return op, op.to_dense() if hasattr(op, "to_dense") else jnp.asarray(op)


def _jax_jvps(s, params, x, x_dots, params_dots):
    """``jax.jvp`` of apply along stacked directions (leading axis: one per direction)."""
    return jax.vmap(lambda x_d, p_d: jax.jvp(s.apply, (params, x), (p_d, x_d))[1])(x_dots, params_dots)


def _jax_vjp(s, params, x, y_bar):
    return jax.vjp(s.apply, params, x)[1](y_bar)


def _jax_jacobian(s, params, x):
    return jax.jacfwd(lambda v: s.apply(params, v))(x if x.ndim == 1 else x[0])


def _references_body(s, params, x, y_bar, x_dots, params_dots, jacobian):
    """The same quantities by JAX autodiff of ``apply``."""
    out = {"jvp": _jax_jvps(s, params, x, x_dots, params_dots), "vjp": _jax_vjp(s, params, x, y_bar)}
    if jacobian:
        out["jacobian"] = _jax_jacobian(s, params, x)
    return out


def _jit(fn, static_argnums):
    """``jax.jit`` for programs that run once or twice: XLA's backend optimisations would cost
    more compile time than they save (they are most of a check's run time)."""
    fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    try:
        return jax.jit(fn, static_argnums=static_argnums, compiler_options=fast)
    except TypeError:  # a JAX without compiler_options
        return jax.jit(fn, static_argnums=static_argnums)


# One compilation per subject and shapes: the subject is static (hashable, by its layer).
_rules = _jit(lambda s, params, inputs, jac: [_rules_body(s, params, *case, i == jac)
                                                for i, case in enumerate(inputs)], (0, 3))
_references = _jit(lambda s, params, inputs, jac: [_references_body(s, params, *case, i == jac)
                                                   for i, case in enumerate(inputs)], (0, 3))
_apply_jit = _jit(lambda s, p, x: s.apply(p, x), 0)
_tape_jit = _jit(lambda chain, p, x: chain.forward(p, x)[1], 0)


def _apply(s, params, x):
    try:
        return _apply_jit(s, params, x)
    except Exception:  # noqa: BLE001 - not traceable (numpy inside) or not hashable: run it eagerly
        return s.apply(params, x)


def _tape(chain, params, x):
    try:
        return _tape_jit(chain, params, x)
    except Exception:  # noqa: BLE001 - as in _apply
        return chain.forward(params, x)[1]


def _rules_one_by_one(s, params, x, y_bar, directions, jacobian):
    """After the compiled call failed: each rule alone and eagerly, so the report names the one that raises."""
    y = s.apply(params, x)
    out = {"jvp": [_attempt(s.jvp, params, x, y, x_d, p_d) for x_d, p_d in directions],
           "vjp": _attempt(s.vjp, params, x, y, y_bar)}
    if jacobian:
        out["jacobian"] = _attempt(_jacobian_body, s, params, x)
    return out


def _references_one_by_one(s, params, x, y_bar, x_dots, params_dots, jacobian):
    """After the compiled call failed: each reference alone (JAX may do jvp but not vjp)."""
    out = {"jvp": _attempt(_jax_jvps, s, params, x, x_dots, params_dots),
           "vjp": _attempt(_jax_vjp, s, params, x, y_bar)}
    if jacobian:
        out["jacobian"] = _attempt(_jax_jacobian, s, params, x)
    return out


# ---- the comparisons ---------------------------------------------------------------------
class _Mismatch(Exception):
    """A rule's result has the wrong shape or structure (reported, not raised)."""


def _attempt(fn, *args):
    """``fn(*args)``, or the exception it raised: a broken rule is a failed row, not a crash."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - whatever a user's rule raises is reported
        return err


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
    params_dots = jax.tree_util.tree_map(lambda *leaves: _put(np.stack([np.asarray(a) for a in leaves])),
                                         *[params_dot([]) if p_d is None else p_d for _, _, p_d in directions])
    return _Draw(x_dot, y_bar, paths, leaf_dots, groups, directions, x_dots, params_dots)


def _check_cases(s, params, cases, rng, tols, report, per_leaf=True):
    """Every comparison for every case. All rules of all cases run in one compiled call, all
    references in another (compiling dominates the run time); one by one where that fails."""
    # the Jacobian is defined for one example: take the unbatched case, else example 0 of the batch
    jac = next((i for i, (_, x) in enumerate(cases) if x.ndim == 1), 0) if s.jacobian else None
    draws = [_draw(s, params, x, rng, per_leaf) for _, x in cases]
    rule_inputs = tuple((x, d.y_bar, tuple((x_d, p_d) for _, x_d, p_d in d.directions))
                        for (_, x), d in zip(cases, draws))
    own = _attempt(_rules, s, params, rule_inputs, jac)
    if isinstance(own, Exception):
        own = [_rules_one_by_one(s, params, *inputs, i == jac) for i, inputs in enumerate(rule_inputs)]
    ref_inputs = tuple((x, d.y_bar, d.x_dots, d.params_dots) for (_, x), d in zip(cases, draws))
    refs = _attempt(_references, s, params, ref_inputs, jac)
    if isinstance(refs, Exception):
        refs = [_references_one_by_one(s, params, *inputs, i == jac) for i, inputs in enumerate(ref_inputs)]
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
    if jacobian:
        label = case if x.ndim == 1 else f"example 0 of {case}"
        _check_jacobian(s, params, x if x.ndim == 1 else x[0], own["jacobian"], refs["jacobian"], tols,
                        lambda *row: add(*row, label=label))


def _unpack_vjp(own_vjp, treedef, n_leaves, add):
    """``(x_bar, [leaf_bar, …])`` from what the vjp rule returned; a wrong structure is a failed row."""
    if not isinstance(own_vjp, Exception) and not (isinstance(own_vjp, tuple) and len(own_vjp) == 2):
        own_vjp = _Mismatch(f"vjp must return (params_bar, x_bar), got {type(own_vjp).__name__}")
    if isinstance(own_vjp, Exception):
        return own_vjp, [own_vjp] * n_leaves
    (params_bar, pb_def), x_bar = jax.tree_util.tree_flatten(own_vjp[0]), own_vjp[1]
    if pb_def != treedef and (params_bar or n_leaves):
        wrong = _Mismatch(f"params_bar has structure {pb_def}, params has {treedef}")
        add("vjp", "params", "structure of params", (np.inf, 0.0, str(wrong)))
        return x_bar, [wrong] * n_leaves
    return x_bar, params_bar


def _check_jacobian(s, params, x, got, ref, tols, add):
    n = x.shape[0]
    name, (rtol, atol) = "jax.jacfwd", tols[0]
    if isinstance(ref, Exception):
        ref = np.stack([_finite_difference(s, params, x, None, e) for e in np.eye(n)], axis=-1)
        name, (rtol, atol) = "finite differences", tols[1]
    op, dense = (got, got) if isinstance(got, Exception) else got
    add("jacobian", "x", name, _compare(dense, ref, rtol, atol))
    declared, returned, problem = _attempt(s.structure, n), getattr(op, "structure", None), ""
    if isinstance(declared, Exception):
        problem = f"jacobian_structure({n}): {_why(declared)}"
    elif tuple(declared.shape) != tuple(np.shape(ref)):
        problem = f"jacobian_structure({n}) declares shape {tuple(declared.shape)}, the Jacobian is {np.shape(ref)}"
    elif returned is not None and returned != declared:
        problem = (f"jacobian returned a {returned.describe()} operator, "
                   f"jacobian_structure({n}) declares {declared.describe()}")
    add("jacobian", "structure", "jacobian_structure", (np.inf if problem else 0.0, 0.0, problem))


# ---- finite differences (float64, no autodiff) -------------------------------------------
_STEP = np.finfo(np.float64).eps ** (1 / 3)  # balances truncation error (∝ h²) and rounding (∝ ε/h)


def _finite_difference(s, params, x, params_dot, x_dot):
    """``(f(θ + h v) - f(θ - h v)) / 2h`` in float64 along ``v = (params_dot, x_dot)`` (None: zero).
    The step is relative to the size of the point, along v scaled to max-norm 1."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    p = [np.asarray(a, np.float64) for a in leaves]
    p_d = [np.zeros_like(a) for a in p] if params_dot is None else \
        [np.asarray(d, np.float64) for d in jax.tree_util.tree_leaves(params_dot)]
    xx = np.asarray(x, np.float64)
    x_d = np.zeros_like(xx) if x_dot is None else np.asarray(x_dot, np.float64)
    size = max(np.max(np.abs(a), initial=0.0) for a in p_d + [x_d])
    scale = max(np.max(np.abs(a), initial=1.0) for a in p + [xx])
    h = _STEP * scale / size if size else 0.0
    with jax.enable_x64(True):
        def at(t):
            shifted = treedef.unflatten([_put(a + t * d) for a, d in zip(p, p_d)])
            return np.asarray(_apply(s, shifted, _put(xx + t * x_d)), np.float64)
        return (at(h) - at(-h)) / (2 * h) if size else np.zeros_like(at(0.0))


def _fd_pullback(s, params, x, y_bar):
    """``(params_bar, x_bar)`` = Jᵀȳ by central differences along every unit direction: the
    fallback when JAX cannot differentiate apply (two applies per element of x and params)."""
    y_bar = np.asarray(y_bar, np.float64)
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def pull(shape, direction):
        out = np.zeros(shape)
        for k in range(out.size):
            unit = np.zeros(shape)
            unit.flat[k] = 1.0
            out.flat[k] = np.vdot(y_bar, _finite_difference(s, params, x, *direction(unit)))
        return out

    def leaf(i):
        return lambda unit: (treedef.unflatten([unit if j == i else np.zeros(np.shape(a))
                                                for j, a in enumerate(leaves)]), None)
    return (treedef.unflatten([pull(np.shape(a), leaf(i)) for i, a in enumerate(leaves)]),
            pull(np.shape(x), lambda unit: (None, unit)))
