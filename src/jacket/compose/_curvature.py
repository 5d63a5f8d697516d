"""Curvature products of a loss at the end of a chain, from the hand-written rules only.

For ``L(θ) = loss(f(θ, x), target)`` with ``f`` a :class:`Chain`:

* :func:`hvp` — the Hessian-vector product ``∇²L · v``, forward-over-reverse: one forward pass
  with tangents (every layer's ``jvp``), the loss's gradient and ``hvp``, one backward pass
  carrying ``(y_bar, y_bar_dot)`` through every layer's ``vjp`` and ``vjp_jvp``. Needs a
  second-order rule in every layer; a missing one is named by its path.
* :func:`ggn_vp` — the generalised Gauss-Newton product ``Jᵀ H_loss J v``: one JVP, the loss's
  ``hvp``, one VJP. It drops the curvature of the layers, so it needs no second-order rule, and
  it is positive semi-definite for the convex built-in losses.
* :func:`hessian` — the dense Hessian of a small problem, one HVP per column.

``checkpoint`` (all three, as :func:`jacket.value_and_grad`: ``"sqrt"``, ``"two-level"``,
``("binomial", B)``, a number of segments or interior boundaries): the forward pass keeps only
the boundary pairs ``(x_b, x_dot_b)`` (for :func:`ggn_vp` only ``x_b``, the VJP needs no
tangents), and the backward pass recomputes each segment's pairs from its boundary, inside
``jax.lax.cond``, before pulling ``(y_bar, y_bar_dot)`` (``u``) back through it (``compose/_checkpoint.py``). Same values.

Each returns a pure function: compose it with ``jax.jit`` (the chain and loss are static).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from ..checkpointing import boundaries, forward_kept, pull_schedule, schedule
from ..core._checks import check_like
from ..core._tangents import call_jvp, call_vjp, call_vjp_jvp, cast_like, is_absent, zeros_like_tree
from ._chain import Chain, require_second_order
from ._checkpoint import pull_checkpointed

__all__ = ["hvp", "ggn_vp", "hessian"]


def _check(chain, loss, wrt, name):
    from ..losses import Loss
    if not isinstance(chain, Chain):
        raise TypeError(f"jacket.{name} expects a jacket.Chain, got {type(chain).__name__}")
    if not isinstance(loss, Loss):
        raise TypeError(f"jacket.{name} expects a jacket.Loss as its second argument, got {loss!r}")
    if not (isinstance(wrt, str) and wrt in ("params", "x")):
        raise ValueError(f"jacket.{name}: wrt must be 'params' or 'x', got {wrt!r}")


def _tangents(chain, params, x, v, wrt, where):
    """Checked ``(params, x, x_dot, params_dot)`` for a vector ``v`` along ``wrt``."""
    chain.check_params(params, where)
    x = chain._check_x(x, where)
    if wrt == "params":
        chain.check_params(v, where, "v")
        return params, x, None, jax.tree_util.tree_map(cast_like, v, params)
    return params, x, cast_like(check_like(v, x, where, "v", "x"), x), None


def _loss_seeds(loss, y, y_dot, target):
    """``(y_bar, y_bar_dot)``: the loss's gradient at y and its tangent ``H_loss · y_dot``."""
    value = loss.apply(y, target)
    y_bar = cast_like(loss.vjp(y, target, value, jnp.ones((), y.dtype)), y)
    y_dot = jnp.zeros_like(y) if y_dot is None else y_dot
    return y_bar, cast_like(check_like(loss.hvp(y, target, y_dot), y, repr(loss), "hvp", "pred"), y)


def _tangent_steps(chain, params, params_dot):
    """``(step, back)`` for :func:`pull_schedule` over ``(x_t, x_dot_t)`` pairs: a layer's
    ``apply`` and ``jvp``; its ``vjp_jvp`` and ``vjp`` (as ``Chain.pull_tangents``), pulling
    ``(y_bar, y_bar_dot)`` back and giving that layer's ``params_bar_dot``."""
    layers = chain.layers
    params_dot = (None,) * len(layers) if is_absent(params_dot) else params_dot

    def step(t, state):
        x, x_dot = state
        y = layers[t].apply(params[t], x)
        return y, call_jvp(layers[t], params[t], x, y, x_dot, params_dot[t])

    def back(t, state, out, cotangent):
        (x, x_dot), (y, y_dot), (y_bar, y_bar_dot) = state, out, cotangent
        p_bar_dot, x_bar_dot = call_vjp_jvp(layers[t], params[t], x, y, y_bar, x_dot, params_dot[t], y_dot,
                                            y_bar_dot)
        _, x_bar = call_vjp(layers[t], params[t], x, y, y_bar)
        return zeros_like_tree(params[t]) if p_bar_dot is None else p_bar_dot, (x_bar, x_bar_dot)
    return step, back


def _forward_pairs(chain, params, x, x_dot, params_dot, bounds):
    """The pairs ``(x_b, x_dot_b)`` at ``bounds`` and at the output, of one forward pass with tangents."""
    step, _ = _tangent_steps(chain, params, params_dot)
    return forward_kept(step, 0, len(chain), (x, x_dot), set(bounds) | {len(chain)})


def hvp(chain: Chain, loss, wrt: str = "params", checkpoint=None) -> Callable:
    """``hvp(chain, loss, wrt="params", checkpoint=None)(params, x, target, v) -> H v``.

    ``H`` is the Hessian of ``L = loss(chain.apply(params, x), target)`` with respect to
    ``params`` (``v`` and the result: pytrees like params) or ``x`` (``wrt="x"``: shaped like x,
    one example ``s_0`` or a batch ``(batch,) + s_0``), equal to
    ``jax.jvp(jax.grad(L), (params,), (v,))[1]``. Cost: one forward pass with tangents and one
    backward pass with tangents, about four times a gradient. Every layer needs ``vjp_jvp``
    (``layer.has_second_order``): otherwise a NotImplementedError names the path to the first
    layer without one, before anything runs. ``checkpoint``: see the module docstring; it keeps
    fewer ``(x, x_dot)`` pairs for one (``"sqrt"``) or two (``"two-level"``) more forward passes
    with tangents.
    """
    _check(chain, loss, wrt, "hvp")
    require_second_order(chain, "jacket.hvp")
    nodes = schedule(len(chain), checkpoint)

    def hvp_fn(params, x, target, v):
        params, x, x_dot, params_dot = _tangents(chain, params, x, v, wrt, "jacket.hvp")
        if checkpoint is None:
            tape, dots = chain.record_tangents(params, x, x_dot, params_dot)
            y_bar, y_bar_dot = _loss_seeds(loss, tape[-1], dots[-1], target)
            _, _, params_bar_dot, x_bar_dot = chain.pull_tangents(params, tape, dots, params_dot, y_bar,
                                                                  y_bar_dot)
        else:
            kept = _forward_pairs(chain, params, x, x_dot, params_dot, boundaries(nodes))
            y, y_dot = kept[len(chain)]
            step, back = _tangent_steps(chain, params, params_dot)
            results, (_, x_bar_dot) = pull_schedule(step, back, params, nodes, kept,
                                                    _loss_seeds(loss, y, y_dot, target))
            params_bar_dot = [results[t] for t in range(len(chain))]
            params_bar_dot = params_bar_dot if isinstance(params, list) else tuple(params_bar_dot)
        if wrt == "params":
            return params_bar_dot
        return jnp.zeros_like(x) if x_bar_dot is None else x_bar_dot
    return hvp_fn


def ggn_vp(chain: Chain, loss, wrt: str = "params", checkpoint=None) -> Callable:
    """``ggn_vp(chain, loss, wrt="params", checkpoint=None)(params, x, target, v) -> Jᵀ H_loss J v``.

    ``J`` is the Jacobian of ``chain.apply`` with respect to ``params`` (``v`` and the result:
    pytrees like params) or ``x`` (shaped like x), ``H_loss`` the Hessian of the loss in the
    prediction (``loss.hvp``). One JVP (the layers' ``jvp``), one ``loss.hvp``, one VJP (the
    layers' ``vjp``): no second-order layer rules are needed. The Hessian of L minus the terms
    that carry the layers' own curvature weighted by the loss's gradient. ``checkpoint``: the
    VJP's activations, kept at the boundaries only (see the module docstring).
    """
    _check(chain, loss, wrt, "ggn_vp")
    nodes = schedule(len(chain), checkpoint)

    def ggn_vp_fn(params, x, target, v):
        params, x, x_dot, params_dot = _tangents(chain, params, x, v, wrt, "jacket.ggn_vp")
        if checkpoint is None:
            tape, dots = chain.record_tangents(params, x, x_dot, params_dot)
            _, u = _loss_seeds(loss, tape[-1], dots[-1], target)
            params_bar, x_bar = chain.pull(params, tape, u)
        else:
            pairs = _forward_pairs(chain, params, x, x_dot, params_dot, boundaries(nodes))
            _, u = _loss_seeds(loss, *pairs[len(chain)], target)
            kept = {b: pair[0] for b, pair in pairs.items()}
            params_bar, x_bar = pull_checkpointed(chain, params, kept, nodes, u)
        return params_bar if wrt == "params" else x_bar
    return ggn_vp_fn


def hessian(chain: Chain, loss, wrt: str = "params", checkpoint=None) -> Callable:
    """``hessian(chain, loss, wrt="params", checkpoint=None)(params, x, target) -> H``, for small
    problems (``checkpoint``: passed to :func:`hvp`).

    ``wrt="params"``: a ``(P, P)`` matrix over the ``P`` parameters flattened in the order of
    ``jax.flatten_util.ravel_pytree(params)`` (leaves in pytree order: layer by layer, each
    layer's dict by sorted key, each leaf row-major). ``wrt="x"``: shape ``x.shape + x.shape``
    (as ``jax.hessian``; for a batch it couples all examples).

    Cost: ``P`` (or ``x.size``) Hessian-vector products of :func:`hvp`, one per unit vector,
    batched with ``jax.vmap``: memory ``P²`` for the result plus ``P`` copies of the tangent
    passes. ``jax.hessian`` (``jacfwd`` of ``jacrev``) pushes the same ``P`` tangents through a
    reverse pass, so both do ``P`` HVPs' work; use :func:`hvp` directly when ``P`` is large.
    """
    product = hvp(chain, loss, wrt, checkpoint)

    def hessian_fn(params, x, target):
        if wrt == "params":
            flat, unravel = ravel_pytree(params)
            units = jnp.eye(flat.size, dtype=flat.dtype)
            rows = jax.vmap(lambda e: ravel_pytree(product(params, x, target, unravel(e)))[0])(units)
            return rows.T  # rows[k] = H e_k, column k of H
        x = jnp.asarray(x)
        n = x.size
        units = jnp.eye(n, dtype=x.dtype).reshape((n,) + x.shape)
        rows = jax.vmap(lambda e: product(params, x, target, e))(units)
        return rows.reshape(n, n).T.reshape(x.shape + x.shape)
    return hessian_fn
