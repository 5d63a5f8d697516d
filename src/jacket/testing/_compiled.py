"""What is run: the subject of a check (a layer, or a chain seen as one), its rules and their
JAX references, each set in one compiled call, and the one-by-one fallbacks when that call fails."""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ..core import Layer
from ..core._tangents import call_jvp, call_vjp


class _Subject:
    """What is checked: ``rules``, a layer or a chain seen through the layer protocol, shown as
    ``name``, for inputs of ``in_shape`` (one example; a batch has one more leading axis). Equal
    and hashed by ``rules`` and ``in_shape``, so that the compiled helpers below are compiled once
    per layer (by value: equal layers share them) and shapes. A layer's rules are called as the
    engine calls them (``call_jvp`` / ``call_vjp``: zeros for absent tangents, primal dtypes)."""

    def __init__(self, name, rules, in_shape):
        self.name, self.rules, self.in_shape = name, rules, tuple(in_shape)
        self.apply = rules.apply
        if isinstance(rules, Layer):
            self.jvp = lambda params, x, y, x_dot, params_dot: call_jvp(rules, params, x, y, x_dot, params_dot)
            self.vjp = lambda params, x, y, y_bar: call_vjp(rules, params, x, y, y_bar)
        else:
            self.jvp, self.vjp = rules.jvp, rules.vjp
        self.jacobian = rules._jacobian_rule if isinstance(rules, Layer) else getattr(rules, "jacobian", None)
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
        return self.chain.jvp(params, x, x_dot, params_dot)[1]

    def vjp(self, params, x, y, y_bar):
        return self.chain.vjp(params, x)[1](y_bar)


def _attempt(fn, *args):
    """``fn(*args)``, or the exception it raised: a broken rule is a failed row, not a crash."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - whatever a user's rule raises is reported
        return err


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
    x1 = s.one_example(x)
    op = s.jacobian(params, x1, s.apply(params, x1))
    return op, op.to_dense() if hasattr(op, "to_dense") else jnp.asarray(op).reshape(-1, x1.size)


def _jax_jvps(s, params, x, x_dots, params_dots):
    """``jax.jvp`` of apply along stacked directions (leading axis: one per direction)."""
    return jax.vmap(lambda x_d, p_d: jax.jvp(s.apply, (params, x), (p_d, x_d))[1])(x_dots, params_dots)


def _jax_vjp(s, params, x, y_bar):
    return jax.vjp(s.apply, params, x)[1](y_bar)


def _jax_jacobian(s, params, x):
    x1 = s.one_example(x)
    return jax.jacfwd(lambda v: s.apply(params, v))(x1).reshape(-1, x1.size)  # (size out, size in)


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
