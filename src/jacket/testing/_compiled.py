"""What is run: the subject of a check (a layer, or a chain seen as one), its rules and their
JAX references, each set in one compiled call, and the one-by-one fallbacks when that call fails."""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ..compose import pull, push, record
from ..core import Layer
from ..core._tangents import call_jvp, call_vjp, call_vjp_jvp


class _Subject:
    """What is checked: ``rules``, a layer or a chain seen through the layer protocol, shown as
    ``name``, for inputs of ``in_shape`` (one example; a batch has one more leading axis). Equal
    and hashed by ``rules`` and ``in_shape``, so that the compiled helpers below are compiled once
    per layer (by value: equal layers share them) and shapes. A layer's rules are called as the
    engine calls them (``call_jvp`` / ``call_vjp`` / ``call_vjp_jvp``: zeros for absent tangents,
    primal dtypes). ``second_order``: whether it has the second-order rule ``vjp_jvp``."""

    def __init__(self, name, rules, in_shape):
        self.name, self.rules, self.in_shape = name, rules, tuple(in_shape)
        self.apply = rules.apply
        if isinstance(rules, Layer):
            self.jvp = lambda params, x, y, x_dot, params_dot: call_jvp(rules, params, x, y, x_dot, params_dot,
                                                                        check=False)
            self.vjp = lambda params, x, y, y_bar: call_vjp(rules, params, x, y, y_bar, check=False)
            self.vjp_jvp = lambda *args: call_vjp_jvp(rules, *args, check=False)
        else:
            self.jvp, self.vjp, self.vjp_jvp = rules.jvp, rules.vjp, getattr(rules, "vjp_jvp", None)
        self.second_order = bool(getattr(rules, "has_second_order", False)) and self.vjp_jvp is not None
        self.jacobian = getattr(rules, "jacobian", None)
        self.structure = getattr(rules, "jacobian_structure", None)

    def one_example(self, x):
        """``x`` itself if it is one example, else example 0 of the batch."""
        return x if tuple(x.shape) == self.in_shape else x[0]

    def __eq__(self, other):
        return isinstance(other, _Subject) and type(self.rules) is type(other.rules) and \
            (self.rules, self.in_shape) == (other.rules, other.in_shape)

    def __hash__(self):
        return hash((self.rules, self.in_shape))


@dataclass(frozen=True)
class _ChainRules:
    """A Chain's apply, jvp and vjp under the layer signatures (no jacobian: not checked here)."""

    chain: object

    def apply(self, params, x):
        return self.chain.apply(params, x)

    def jvp(self, params, x, y, x_dot, params_dot=None):
        y_dot = push(self.chain, params, x, x_dot, params_dot)[1]
        return jnp.zeros_like(self.chain.apply(params, x)) if y_dot is None else y_dot

    def vjp(self, params, x, y, y_bar):
        return pull(self.chain, params, record(self.chain, params, x)[1], y_bar)

    @property
    def has_second_order(self):
        return bool(getattr(self.chain, "has_second_order", False))

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        return call_vjp_jvp(self.chain, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot, check=False)


def _attempt(fn, *args):
    """``fn(*args)``, or the exception it raised: a broken rule is a failed row, not a crash."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - whatever a user's rule raises is reported
        return err


# ---- the rules and their references, each set in one compiled call ------------------------
def _rules_body(s, params, x, y_bar, directions, second, fd_points, jacobian):
    """The rules under test: jvp along each ``(x_dot, params_dot)`` of ``directions``, the vjp of
    ``y_bar``, vjp_jvp along each ``(x_dot, params_dot, y_bar_dot)`` of ``second`` (empty for a
    layer without the rule), the vjp at the stacked ``fd_points`` of its finite differences (a
    float64 check: they need no program of their own), and with ``jacobian`` the Jacobian at one
    example (as returned, and dense)."""
    y = s.apply(params, x)
    out = {"jvp": [s.jvp(params, x, y, x_d, p_d) for x_d, p_d in directions], "vjp": s.vjp(params, x, y, y_bar)}
    if second:  # along x_dot, then everything: y_dot reused from the jvp along directions[0], [-1]
        y_dots = [out["jvp"][0], out["jvp"][-1]]
        out["vjp_jvp"] = [s.vjp_jvp(params, x, y, y_bar, x_d, p_d, y_d, yb_d)
                          for (x_d, p_d, yb_d), y_d in zip(second, y_dots)]
    if fd_points is not None:
        out["fd_pullbacks"] = _vmapped_vjp(s, *fd_points)
    if jacobian:
        out["jacobian"] = _jacobian_body(s, params, x)
    return out


def _jacobian_body(s, params, x):
    """The Jacobian at one example (example 0 of a batch): as returned, and dense."""
    x1 = s.one_example(x)
    op = s.jacobian(params, x1, s.apply(params, x1))
    return op, op.to_dense() if hasattr(op, "to_dense") else jnp.asarray(op).reshape(-1, x1.size)


def _jax_jvps(s, params, x, x_dots, params_dots):
    """``jax.jvp`` of apply along stacked directions (leading axis: one per direction)."""
    return jax.vmap(lambda x_d, p_d: jax.jvp(s.apply, (params, x), (p_d, x_d))[1])(x_dots, params_dots)


def _jax_vjp(s, params, x, y_bar):
    return jax.vjp(s.apply, params, x)[1](y_bar)


def _jax_vjp_jvps(s, params, x, y_bar, second):
    """``jax.vjp`` of apply at ``y_bar`` and its tangent (forward over reverse, never the
    hand-written vjp) along stacked directions ``second = (x_dots, params_dots, y_bar_dots)``:
    ``((params_bar, x_bar), (params_bar_dots, x_bar_dots))``, the tangents with a leading axis,
    one entry per direction."""
    def pull(p, xx, yb):
        return jax.vjp(s.apply, p, xx)[1](yb)
    primal, tangents = jax.vmap(lambda x_d, p_d, yb_d: jax.jvp(pull, (params, x, y_bar), (p_d, x_d, yb_d)),
                                out_axes=(None, 0))(*second)
    return primal, tangents


def _jax_jacobian(s, params, x):
    x1 = s.one_example(x)
    return jax.jacfwd(lambda v: s.apply(params, v))(x1).reshape(-1, x1.size)  # (size out, size in)


def _references_body(s, params, x, y_bar, x_dots, params_dots, second, jacobian):
    """The same quantities by JAX autodiff of ``apply``."""
    out = {"jvp": _jax_jvps(s, params, x, x_dots, params_dots)}
    if second is None:
        out["vjp"] = _jax_vjp(s, params, x, y_bar)
    else:  # the vjp is the primal of its tangent: one program for both
        out["vjp"], out["vjp_jvp"] = _jax_vjp_jvps(s, params, x, y_bar, second)
    if jacobian:
        out["jacobian"] = _jax_jacobian(s, params, x)
    return out


def _vmapped_vjp(s, params, x, y_bar):
    """The hand-written vjp at stacked points (a leading axis on every argument)."""
    return jax.vmap(lambda p, xx, yb: s.vjp(p, xx, s.apply(p, xx), yb))(params, x, y_bar)


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
# the hand-written vjp at the stacked points of each case: the finite differences of vjp_jvp
_pullbacks_jit = _jit(lambda s, points: [_vmapped_vjp(s, *pt) for pt in points], 0)
_tape_jit = _jit(lambda chain, p, x: record(chain, p, x)[1], 0)


def _apply(s, params, x):
    try:
        return _apply_jit(s, params, x)
    except Exception:  # noqa: BLE001 - not traceable (numpy inside) or not hashable: run it eagerly
        return s.apply(params, x)


def _pullbacks(s, points):
    """``s.vjp`` at the stacked points ``(params, x, y_bar)`` of every case, in float64, in one
    compiled call; point by point and eagerly where that fails (a rule that does not vmap)."""
    with jax.enable_x64(True):
        try:
            return _pullbacks_jit(s, points)
        except Exception:  # noqa: BLE001 - as in _apply
            return [_attempt(_vjp_point_by_point, s, *pt) for pt in points]


def _vjp_point_by_point(s, params, x, y_bar):
    outs = []
    for k in range(x.shape[0]):
        p_k = jax.tree_util.tree_map(lambda a: a[k], params)
        outs.append(s.vjp(p_k, x[k], s.apply(p_k, x[k]), y_bar[k]))
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *outs)


def _tape(chain, params, x):
    try:
        return _tape_jit(chain, params, x)
    except Exception:  # noqa: BLE001 - as in _apply
        return record(chain, params, x)[1]


def _rules_one_by_one(s, params, x, y_bar, directions, second, fd_points, jacobian):
    """After the compiled call failed: each rule alone and eagerly, so the report names the one that raises."""
    y = s.apply(params, x)
    out = {"jvp": [_attempt(s.jvp, params, x, y, x_d, p_d) for x_d, p_d in directions],
           "vjp": _attempt(s.vjp, params, x, y, y_bar)}
    if second:
        out["vjp_jvp"] = [_attempt(s.vjp_jvp, params, x, y, y_bar, x_d, p_d, None, yb_d) for x_d, p_d, yb_d in second]
        # (y_dot=None: recomputed by call_vjp_jvp, as the jvp above may have raised)
    if jacobian:
        out["jacobian"] = _attempt(_jacobian_body, s, params, x)
    return out


def _references_one_by_one(s, params, x, y_bar, x_dots, params_dots, second, jacobian):
    """After the compiled call failed: each reference alone (JAX may do jvp but not vjp)."""
    out = {"jvp": _attempt(_jax_jvps, s, params, x, x_dots, params_dots),
           "vjp": _attempt(_jax_vjp, s, params, x, y_bar)}
    if second is not None:
        both = _attempt(_jax_vjp_jvps, s, params, x, y_bar, second)
        out["vjp_jvp"] = both if isinstance(both, Exception) else both[1]
    if jacobian:
        out["jacobian"] = _attempt(_jax_jacobian, s, params, x)
    return out
