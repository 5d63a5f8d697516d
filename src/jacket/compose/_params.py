"""Jacobians with respect to the parameters: ``chain.jacobian(params, x, wrt="params")``,
per-example gradients and the empirical neural tangent kernel, all from the layers' own rules.

For one example ``x`` (shape ``s_0``) and output ``y = f(params, x)`` (shape ``s_N``, size
``n_N``), the parameter Jacobian is a pytree like ``params`` whose leaf for a parameter of shape
``leaf_shape`` has shape ``s_N + leaf_shape`` (as ``jax.jacrev(lambda p: chain.apply(p, x))``).
Two orders accumulate it:

* ``"reverse"``: the ``n_N`` unit cotangents are pulled back once through the VJP rules
  (``Chain.pull`` under ``jax.vmap``), which gives every layer's ``params_bar`` in the same sweep,
  so the prefixes ``J_N ⋯ J_{l+1}`` are shared by all layers. Cost ``n_N · Σ_{t ≥ l₁} vjp_t``
  with ``l₁`` the first layer that has parameters.
* ``"forward"``: one unit tangent per parameter entry, pushed with ``Chain.push(params, x,
  None, params_dot)`` from its own layer to the output (the layers before it are not
  differentiated). Cost ``Σ_l P_l · Σ_{t ≥ l} jvp_t`` with ``P_l`` the entries of layer l.

``"optimal"`` is the cheaper of the two by the layers' declared ``jvp_cost`` / ``vjp_cost``
(:func:`params_jacobian_costs`). The mixed-mode plans and bracketings of the input Jacobian are
not yet offered for ``wrt="params"``. No JAX autodiff is used: only the rules and ``jax.vmap``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..core._checks import check_input
from ..core._shapes import split_batch
from ._backprop import value_and_grad
from ._chain import Chain

__all__ = ["params_jacobian", "params_jacobian_costs", "params_plan", "ParamsPlan", "per_example_grads", "ntk",
           "ntk_costs"]

PARAM_ORDERS = ("forward", "reverse", "optimal")
WRT = ("x", "params")


def check_wrt(wrt):
    if not isinstance(wrt, str) or wrt not in WRT:
        raise ValueError(f"Chain.jacobian: wrt must be 'x' or 'params', got {wrt!r}")


def _check_order(order):
    if not isinstance(order, str) or order not in PARAM_ORDERS:
        raise ValueError(f"Chain.jacobian(wrt='params'): order must be one of {PARAM_ORDERS}, got {order!r} "
                         f"(the bracketings, mixed plans and Plan objects of the input Jacobian are not "
                         f"yet offered for wrt='params')")


@lru_cache(maxsize=256)
def params_jacobian_costs(chain: Chain) -> dict:
    """``{"forward": fma, "reverse": fma}``: the model cost of one example's parameter Jacobian in
    each order, from the layers' ``jvp_cost`` / ``vjp_cost`` on ``chain.shapes`` (see the module
    docstring), plus ``"entries"`` (P_l per layer) and ``"push"`` (one full params tangent
    pushed to the output, ``Σ_{t ≥ l₁} jvp_t``)."""
    shapes = jax.eval_shape(chain.init, jax.random.PRNGKey(0))
    entries = tuple(sum(leaf.size for leaf in jax.tree_util.tree_leaves(p)) for p in shapes)
    jvp = [int(layer.jvp_cost(s)) for layer, s in zip(chain.layers, chain.shapes)]
    vjp = [int(layer.vjp_cost(s)) for layer, s in zip(chain.layers, chain.shapes)]
    first = next((i for i, p in enumerate(entries) if p), len(entries))
    forward = sum(p * sum(jvp[i:]) for i, p in enumerate(entries))
    reverse = chain.dims[-1] * sum(vjp[first:]) if first < len(entries) else 0
    return {"forward": forward, "reverse": reverse, "entries": entries, "push": sum(jvp[first:])}


def resolve_order(chain, order):
    _check_order(order)
    if order != "optimal":
        return order
    costs = params_jacobian_costs(chain)
    return "forward" if costs["forward"] < costs["reverse"] else "reverse"


@dataclass(frozen=True)
class ParamsPlan:
    """The plan of a parameter Jacobian (``chain.plan(order, wrt="params")``): the order that
    runs (``"forward"`` or ``"reverse"``), the order asked for, and the model costs of both.
    ``str(plan)`` / ``plan.table()`` prints them with one row per layer."""

    chain: Chain
    order: str
    requested: str

    @property
    def costs(self) -> dict:
        return params_jacobian_costs(self.chain)

    @property
    def fma(self) -> int:
        return self.costs[self.order]

    def table(self) -> str:
        from .._table import format_table
        chain, costs = self.chain, self.costs
        n_out, entries = chain.dims[-1], costs["entries"]
        jvp = [int(layer.jvp_cost(s)) for layer, s in zip(chain.layers, chain.shapes)]
        vjp = [int(layer.vjp_cost(s)) for layer, s in zip(chain.layers, chain.shapes)]
        first = next((i for i, p in enumerate(entries) if p), len(entries))
        shapes = " -> ".join("×".join(map(str, s)) for s in chain.shapes)
        best = min(costs["forward"], costs["reverse"])
        lines = [("order:", self.order + (f"  ({self.requested})" if self.requested != self.order else "")),
                 ("forward (one tangent per parameter):", f"{costs['forward']:,} fma"),
                 (f"reverse ({n_out} adjoint rows, shared):", f"{costs['reverse']:,} fma"),
                 ("this plan:", f"{self.fma:,} fma"
                  + ("" if self.fma == best else f" ({self.fma / best:.2f}x the cheaper order)"))]
        head = [f"  Jacobian with respect to the params of a chain with shapes {shapes}: "
                f"{n_out}×{sum(entries)} ({sum(entries):,} parameters)"]
        head += [f"  {label.ljust(40)} {value}" for label, value in lines]
        head += ["  (mixed plans and bracketings are not offered for wrt='params' yet)", "", ""]
        rows = [(i, repr(layer), p, p * sum(jvp[i - 1:]), n_out * vjp[i - 1] if i - 1 >= first else 0)
                for i, (layer, p) in enumerate(zip(chain.layers, entries), 1)]
        return "\n".join(head) + format_table(
            ["layer", "", "params", "forward fma (its tangents to the output)", "reverse fma (rows through it)"],
            rows)

    __str__ = table


def params_plan(chain: Chain, order="optimal") -> ParamsPlan:
    """The :class:`ParamsPlan` of ``chain``'s parameter Jacobian for ``order``."""
    return ParamsPlan(chain, resolve_order(chain, order), order)


def params_jacobian(chain: Chain, params, x, order="optimal", mesh=None):
    """The Jacobian of ``chain.apply(params, x)`` with respect to ``params``: a pytree like
    ``params`` with leaves ``s_N + leaf_shape`` for one example, ``(batch,) + s_N + leaf_shape``
    for a batch (each example its own Jacobian), in the dtype of the output. ``order``:
    ``"reverse"``, ``"forward"`` or ``"optimal"`` (the cheaper of the two; no mixed plans)."""
    if mesh is not None:
        raise ValueError("Chain.jacobian(wrt='params') does not take a mesh yet, got one")
    chain.check_params(params, "Chain.jacobian")
    order = resolve_order(chain, order)
    x = check_input(x, chain.in_shape, "Chain.jacobian")
    if split_batch(x.shape, chain.in_shape, "Chain.jacobian"):
        return jax.vmap(lambda xi: _one(chain, order, params, xi))(x)
    return _one(chain, order, params, x)


@partial(jax.jit, static_argnums=(0, 1))
def _one(chain, order, params, x):
    return (_reverse if order == "reverse" else _forward)(chain, params, x)


def _reverse(chain, params, x):
    """``n_N`` unit cotangents through ``Chain.pull``: leaves ``(n_N,) + leaf`` -> ``s_N + leaf``."""
    y, tape = chain._record(params, x)
    seeds = jnp.eye(y.size, dtype=y.dtype).reshape((y.size,) + y.shape)
    bars = jax.vmap(lambda v: chain.pull(params, tape, v)[0])(seeds)
    return jax.tree_util.tree_map(lambda b: b.reshape(y.shape + b.shape[1:]).astype(y.dtype), bars)


def _forward(chain, params, x):
    """One unit tangent per entry of layer l's params, pushed from layer l on; ``(P_l,) + s_N``
    split back into the layer's leaves ``s_N + leaf``."""
    y = chain._record(params, x)[0]
    out = []
    for i, p in enumerate(params):
        leaves, treedef = jax.tree_util.tree_flatten(p)
        if not leaves:
            out.append(p)
            continue
        flat, unravel = ravel_pytree(p)
        absent = [None] * len(params)

        def push(e, i=i, unravel=unravel, absent=absent):
            absent = list(absent)
            absent[i] = unravel(e)
            y_dot = chain.push(params, x, None, tuple(absent))[1]
            return jnp.zeros_like(y) if y_dot is None else y_dot
        cols = jax.vmap(push)(jnp.eye(flat.size, dtype=flat.dtype)).reshape(flat.size, y.size)
        pieces, start = [], 0
        for leaf in leaves:
            block = cols[start:start + leaf.size].T.reshape(y.shape + leaf.shape).astype(y.dtype)
            pieces.append(block)
            start += leaf.size
        out.append(jax.tree_util.tree_unflatten(treedef, pieces))
    return type(params)(out)


def per_example_grads(chain: Chain, loss) -> Callable:
    """``per_example_grads(chain, loss)(params, x, target) -> (values, grads)``.

    ``x``: ``(batch,) + s_0``; ``target``: a leading batch axis (then what ``loss`` takes for one
    example). ``values[b] = loss.apply(chain.apply(params, x[b]), target[b])``, shape ``(batch,)``
    (each example's own loss: the built-in losses then average over that example's outputs or
    positions only, not over the batch); ``grads``: like ``params`` with a leading ``(batch,)``
    axis on every leaf, the gradient of ``values[b]``. Equal to ``jax.vmap(jax.grad(...))``.

    It is ``jax.vmap`` over examples of :func:`jacket.value_and_grad` on one example: under
    ``jax.jit`` XLA batches it into one forward and one backward pass over the whole batch (a
    Dense layer's per-example weight gradient becomes one batched outer product), no loop.
    """
    one = value_and_grad(chain, loss)

    def per_example_grads_fn(params, x, target):
        x = check_input(x, chain.in_shape, "per_example_grads")
        if not split_batch(x.shape, chain.in_shape, "per_example_grads"):
            raise ValueError(f"per_example_grads: x must have a batch axis, (batch,) + {chain.in_shape}, "
                             f"got one example of shape {tuple(x.shape)}")
        t_shape = tuple(jnp.shape(target))
        if not t_shape or t_shape[0] != x.shape[0]:
            raise ValueError(f"per_example_grads: target must have the batch axis of x ({x.shape[0]}) "
                             f"first, got shape {t_shape}")
        return jax.vmap(one, in_axes=(None, 0, 0))(params, x, target)
    return per_example_grads_fn


def ntk(chain: Chain, implementation="auto", order="reverse") -> Callable:
    """``ntk(chain)(params, x1, x2=None, trace=False)``: the empirical neural tangent kernel
    ``Θ(x1, x2) = Σ_leaves J(x1) J(x2)ᵀ`` (J the parameter Jacobian of one example, flattened to
    ``(n_N, P_leaf)``), shape ``(n1, n2) + s_N + s_N``; ``x1``: ``(n1,) + s_0``, ``x2``:
    ``(n2,) + s_0`` (default ``x1``). With ``trace=True``: ``(n1, n2)``, the *mean* over the
    ``n_N`` diagonal output pairs, ``Σ_a Θ[i, j, a, a] / n_N`` (neural-tangents' ``trace_axes``
    normalisation).

    ``implementation``: ``"jacobian"`` contracts the parameter Jacobians of both batches (in
    ``order``, see :func:`params_jacobian`); ``"ntvp"`` forms NTK-vector products
    ``Θ v = J(x1) (J(x2)ᵀ v)``: the ``n2 · n_N`` unit cotangents pulled back through x2's
    tape, then each pushed as a params tangent through x1's batch; ``"auto"`` picks the cheaper
    by the layers' declared costs (:func:`ntk_costs`), as neural-tangents' implementations 1/2.
    """
    if implementation not in ("auto", "jacobian", "ntvp"):
        raise ValueError(f"ntk: implementation must be 'auto', 'jacobian' or 'ntvp', got {implementation!r}")
    _check_order(order)

    def ntk_fn(params, x1, x2=None, trace=False):
        chain.check_params(params, "ntk")
        x2 = x1 if x2 is None else x2
        for name, x in (("x1", x1), ("x2", x2)):
            x = check_input(x, chain.in_shape, "ntk", name)
            if not split_batch(x.shape, chain.in_shape, "ntk", name):
                raise ValueError(f"ntk: {name} must have a batch axis, (n,) + {chain.in_shape}, "
                                 f"got shape {tuple(x.shape)}")
        impl = implementation
        if impl == "auto":
            costs = ntk_costs(chain, x1.shape[0], x2.shape[0], bool(trace), order)
            impl = min(costs, key=costs.get)
        return _ntk(chain, impl, resolve_order(chain, order), bool(trace), params, jnp.asarray(x1),
                    jnp.asarray(x2))
    return ntk_fn


def ntk_costs(chain: Chain, n1: int, n2: int, trace: bool = False, order="reverse") -> dict:
    """Model fma of the two NTK implementations for batches of n1 and n2 examples:
    ``"jacobian"``: both Jacobians, ``(n1 + n2) · C_J``, plus the contraction ``n1 n2 n_N² P``
    (``n1 n2 n_N P`` traced); ``"ntvp"``: x2's Jacobian by reverse, ``n2 · C_rev``, plus
    ``n2 n_N · n1`` pushes of a params tangent, ``Σ_{t ≥ l₁} jvp_t`` each."""
    costs = params_jacobian_costs(chain)
    n_out, p = chain.dims[-1], sum(costs["entries"])
    jac = (n1 + n2) * costs[resolve_order(chain, order)] + n1 * n2 * (n_out if trace else n_out * n_out) * p
    ntvp = n2 * costs["reverse"] + n2 * n_out * n1 * costs["push"]
    return {"jacobian": jac, "ntvp": ntvp}


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ntk(chain, impl, order, trace, params, x1, x2):
    n1, n2, out = x1.shape[0], x2.shape[0], chain.out_shape
    n_out = chain.dims[-1]
    if impl == "jacobian":
        j1, j2 = (jax.vmap(lambda xi: _one(chain, order, params, xi))(x) for x in (x1, x2))
        flat = lambda j, n: j.reshape(n, n_out, -1)  # noqa: E731
        spec = "iap,jap->ij" if trace else "iap,jbp->ijab"
        theta = sum(jnp.einsum(spec, flat(a, n1), flat(b, n2))
                    for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)))
        return theta / n_out if trace else theta.reshape((n1, n2) + out + out)
    j2 = jax.vmap(lambda xi: _reverse(chain, params, xi))(x2)  # leaves (n2,) + s_N + leaf
    j2 = jax.tree_util.tree_map(lambda b: b.reshape((n2 * n_out,) + b.shape[1 + len(out):]), j2)

    def push(p_dot):
        y_dot = chain.push(params, x1, None, p_dot)[1]
        return jnp.zeros((n1,) + out, x1.dtype) if y_dot is None else y_dot
    cols = jax.vmap(push)(j2).reshape(n2, n_out, n1, n_out)  # [j, b, i, a] = Θ[i, j, a, b]
    theta = jnp.transpose(cols, (2, 0, 3, 1))
    if trace:
        return jnp.trace(theta, axis1=2, axis2=3) / n_out
    return theta.reshape((n1, n2) + out + out)
