"""The layer protocol: a primal with its hand-written derivative rules and cost declaration.

Signatures (one convention for every rule, in the argument order of ``jax.vjp``)::

    init(key)                                   -> params            (pytree; {} by default)
    out_dim(in_dim)                             -> int               (default: in_dim)
    apply(params, x)                            -> y                 x: (n_in,) or (batch, n_in)
    jvp(params, x, y, x_dot, params_dot=None)   -> y_dot             linear in (x_dot, params_dot)
    vjp(params, x, y, y_bar)                    -> (params_bar, x_bar)   params_bar summed over batch
    jacobian(params, x, y)                      -> LinearOperator    (n_out, n_in), one example

``y`` is the primal output ``apply(params, x)``, passed in so rules can reuse it
(tanh' = 1 - y², σ' = y(1 - y)). ``None`` stands for an absent (zero) tangent.

Cost declaration, static (fma = multiply-adds, per vector, for one example)::

    jvp_cost(n_in), vjp_cost(n_in)          one tangent / one cotangent through the rule
    jacobian_structure(n_in)                the Structure that ``jacobian`` returns
    jacobian_cost(n_in)                     fma to materialise it
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .operators import Matrix, Structure

__all__ = ["Layer"]


class Layer:
    """Base class for layers: subclass it, set static configuration in ``__init__``.

    Layers hold only static configuration (ints, floats, strings, tuples); arrays live in
    ``params``. Equality and hashing are by type and attributes, so a layer (and a Chain of
    layers) can be a static argument of ``jax.jit``.
    """

    # ---- configuration ---------------------------------------------------------------
    def _config(self) -> tuple:
        return tuple(sorted(vars(self).items()))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._config() == other._config()

    def __hash__(self) -> int:
        try:
            return hash((type(self), self._config()))
        except TypeError as err:
            raise TypeError(f"{type(self).__name__} is not hashable: layers may hold only static "
                            f"configuration (ints, floats, strings, tuples), arrays go in params ({err})") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    # ---- primal ----------------------------------------------------------------------
    def init(self, key) -> dict:
        """Parameters for this layer (a pytree). Default: ``{}``."""
        return {}

    def required_in_dim(self) -> int | None:
        """The input width this layer requires, or ``None`` if it takes any width."""
        return None

    def out_dim(self, in_dim: int) -> int:
        """Output width for an input of width ``in_dim``. Default: unchanged."""
        return in_dim

    def apply(self, params, x):  # pragma: no cover - abstract
        """``y = f(params, x)`` for x of shape ``(n_in,)`` or ``(batch, n_in)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply(params, x)")

    # ---- rules -----------------------------------------------------------------------
    def jvp(self, params, x, y, x_dot, params_dot=None):  # pragma: no cover - abstract
        """Tangent ``y_dot`` (shape of y) for tangents ``x_dot`` (shape of x) and ``params_dot``."""
        raise NotImplementedError(f"{type(self).__name__} must implement jvp(params, x, y, x_dot, params_dot=None)")

    def vjp(self, params, x, y, y_bar):  # pragma: no cover - abstract
        """Cotangents ``(params_bar, x_bar)`` for ``y_bar`` (shape of y); params_bar summed over batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement vjp(params, x, y, y_bar)")

    def jacobian(self, params, x, y):
        """Jacobian with respect to x at one example ``x`` of shape ``(n_in,)``: an operator of
        shape ``(n_out, n_in)``. Default: the JVP rule applied to the n_in unit vectors."""
        eye = jnp.eye(x.shape[-1], dtype=x.dtype)
        columns = jax.vmap(lambda e: self.jvp(params, x, y, e))(eye)  # (n_in, n_out)
        return Matrix(columns.T)

    # ---- cost declaration (fma) ------------------------------------------------------
    def jvp_cost(self, in_dim: int) -> int:
        """fma to push one tangent through ``jvp``. Default: a dense ``n_out × n_in`` product."""
        return in_dim * self.out_dim(in_dim)

    def vjp_cost(self, in_dim: int) -> int:
        """fma to pull one cotangent (input part) through ``vjp``. Default: ``jvp_cost``."""
        return self.jvp_cost(in_dim)

    def jacobian_structure(self, in_dim: int) -> Structure:
        """Structure of what ``jacobian`` returns. Default: dense."""
        return Structure("matrix", self.out_dim(in_dim), in_dim)

    def jacobian_cost(self, in_dim: int) -> int:
        """fma to materialise the Jacobian. Default: n_in JVPs (the default ``jacobian``)."""
        return in_dim * self.jvp_cost(in_dim)


class Elementwise(Layer):
    """Base for elementwise layers ``y = f(x)``: subclasses define ``apply`` and
    ``derivative(x, y)`` (f'(x), allowed to reuse y). Rules and costs follow."""

    def derivative(self, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def jvp(self, params, x, y, x_dot, params_dot=None):
        if x_dot is None:
            return jnp.zeros_like(y)
        return self.derivative(x, y) * x_dot

    def vjp(self, params, x, y, y_bar):
        return {}, self.derivative(x, y) * y_bar

    def jacobian(self, params, x, y):
        from .operators import Diagonal
        return Diagonal(self.derivative(x, y))

    def jvp_cost(self, in_dim):
        return in_dim

    def jacobian_structure(self, in_dim):
        return Structure("diagonal", in_dim, in_dim)

    def jacobian_cost(self, in_dim):
        return in_dim
