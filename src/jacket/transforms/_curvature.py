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
from ..compose import pull, pull_checkpointed, pull_tangents, record_tangents, require_second_order
from ..core._checks import check_like
from ..core._tangents import RuleOutputError, call_jvp, call_vjp, call_vjp_jvp, cast_like, is_absent, zeros_like_tree
from ._backprop import _chain_of
from ._options import check_checkpoint, check_chunk, check_loss, check_memory_limit

__all__ = ["hvp", "ggn_vp", "hessian"]


def _check(chain, loss, argnums, checkpoint, where):
    """The checked ``(chain, loss)`` of a curvature transform; ``argnums`` 0 (the parameters) or 1
    (the input x) of ``(params, x, target, v)``."""
    chain = _chain_of(chain, where)
    loss = check_loss(loss, where)
    if isinstance(argnums, bool) or argnums not in (0, 1):
        raise ValueError(f"{where}: argnums must be 0 (the parameters) or 1 (the input x), got {argnums!r}")
    check_checkpoint(checkpoint, where, boundaries_allowed=True)
    return chain, loss


def _tangents(chain, params, x, v, argnums, where):
    """Checked ``(params, x, x_dot, params_dot)`` for a vector ``v`` along ``argnums``."""
    chain.check_params(params, where)
    x = chain.check_input(x, where)
    if argnums == 0:
        chain.check_params(v, where, "v")
        return params, x, None, jax.tree_util.tree_map(cast_like, v, params)
    if getattr(v, "shape", None) is None and not hasattr(v, "__array__"):
        raise TypeError(f"{where}: with argnums=1, v must be an array shaped like x, {tuple(x.shape)}; got a "
                        f"{type(v).__name__} (a params-shaped v goes with argnums=0)")
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
        return y, call_jvp(layers[t], params[t], x, y, x_dot, params_dot[t], f"layer {t + 1}")

    def back(t, state, out, cotangent):
        (x, x_dot), (y, y_dot), (y_bar, y_bar_dot) = state, out, cotangent
        p_bar_dot, x_bar_dot = call_vjp_jvp(layers[t], params[t], x, y, y_bar, x_dot, params_dot[t], y_dot,
                                            y_bar_dot, f"layer {t + 1}")
        _, x_bar = call_vjp(layers[t], params[t], x, y, y_bar, f"layer {t + 1}")
        return zeros_like_tree(params[t]) if p_bar_dot is None else p_bar_dot, (x_bar, x_bar_dot)
    return step, back


def _forward_pairs(chain, params, x, x_dot, params_dot, bounds):
    """The pairs ``(x_b, x_dot_b)`` at ``bounds`` and at the output, of one forward pass with tangents."""
    step, _ = _tangent_steps(chain, params, params_dot)
    return forward_kept(step, 0, len(chain), (x, x_dot), set(bounds) | {len(chain)})


def hvp(chain, loss, *, argnums=0, checkpoint=None) -> Callable:
    """``hvp(chain, loss, *, argnums=0, checkpoint=None)(params, x, target, v) -> H v``.

    ``H`` is the Hessian of ``L = loss(chain(params, x), target)`` with respect to ``params``
    (``argnums=0``: ``v`` and the result are pytrees like params) or ``x`` (``argnums=1``: shaped
    like x, one example ``s_0`` or a batch ``(batch,) + s_0``), equal to
    ``jax.jvp(jax.grad(L, argnums), …, (v,))[1]``. Cost: one forward pass with tangents and one
    backward pass with tangents, about four times a gradient. Every layer needs ``vjp_jvp``
    (``layer.has_second_order``): otherwise a NotImplementedError names the path to the first
    layer without one, before anything runs. ``checkpoint``: see the module docstring; it keeps
    fewer ``(x, x_dot)`` pairs for one (``"sqrt"``) or two (``"two-level"``) more forward passes
    with tangents.
    """
    where = "jacket.hvp"
    chain, loss = _check(chain, loss, argnums, checkpoint, where)
    require_second_order(chain, where)
    nodes = schedule(len(chain), checkpoint)

    def hvp_fn(params, x, target, v):
        params, x, x_dot, params_dot = _tangents(chain, params, x, v, argnums, where)
        try:
            if checkpoint is None:
                tape, dots = record_tangents(chain, params, x, x_dot, params_dot)
                y_bar, y_bar_dot = _loss_seeds(loss, tape[-1], dots[-1], target)
                _, _, params_bar_dot, x_bar_dot = pull_tangents(chain, params, tape, dots, params_dot, y_bar,
                                                                y_bar_dot)
            else:
                kept = _forward_pairs(chain, params, x, x_dot, params_dot, boundaries(nodes))
                y, y_dot = kept[len(chain)]
                step, back = _tangent_steps(chain, params, params_dot)
                results, (_, x_bar_dot) = pull_schedule(step, back, params, nodes, kept,
                                                        _loss_seeds(loss, y, y_dot, target))
                params_bar_dot = [results[t] for t in range(len(chain))]
                params_bar_dot = params_bar_dot if isinstance(params, list) else tuple(params_bar_dot)
        except RuleOutputError as err:
            raise err.at(where) from None
        if argnums == 0:
            return params_bar_dot
        return jnp.zeros_like(x) if x_bar_dot is None else x_bar_dot
    return hvp_fn


def ggn_vp(chain, loss, *, argnums=0, checkpoint=None) -> Callable:
    """``ggn_vp(chain, loss, *, argnums=0, checkpoint=None)(params, x, target, v) -> Jᵀ H_loss J v``.

    ``J`` is the Jacobian of ``chain(params, x)`` with respect to ``params`` (``argnums=0``: ``v``
    and the result are pytrees like params) or ``x`` (``argnums=1``: shaped like x), ``H_loss``
    the Hessian of the loss in the prediction (``loss.hvp``). One JVP (the layers' ``jvp``), one
    ``loss.hvp``, one VJP (the layers' ``vjp``): no second-order layer rules are needed. The
    Hessian of L minus the terms that carry the layers' own curvature weighted by the loss's
    gradient. ``checkpoint``: the VJP's activations, kept at the boundaries only (see the
    module docstring).
    """
    where = "jacket.ggn_vp"
    chain, loss = _check(chain, loss, argnums, checkpoint, where)
    nodes = schedule(len(chain), checkpoint)

    def ggn_vp_fn(params, x, target, v):
        params, x, x_dot, params_dot = _tangents(chain, params, x, v, argnums, where)
        try:
            if checkpoint is None:
                tape, dots = record_tangents(chain, params, x, x_dot, params_dot)
                _, u = _loss_seeds(loss, tape[-1], dots[-1], target)
                params_bar, x_bar = pull(chain, params, tape, u)
            else:
                pairs = _forward_pairs(chain, params, x, x_dot, params_dot, boundaries(nodes))
                _, u = _loss_seeds(loss, *pairs[len(chain)], target)
                kept = {b: pair[0] for b, pair in pairs.items()}
                params_bar, x_bar = pull_checkpointed(chain, params, kept, nodes, u)
        except RuleOutputError as err:
            raise err.at(where) from None
        return params_bar if argnums == 0 else x_bar
    return ggn_vp_fn


#: the largest dense Hessian :func:`hessian` makes unless told otherwise: 1 GiB
HESSIAN_LIMIT = 2 ** 30


def hessian(chain, loss, *, argnums=0, checkpoint=None, chunk=None, memory_limit=HESSIAN_LIMIT) -> Callable:
    """``hessian(chain, loss, *, argnums=0, checkpoint=None, chunk=None, memory_limit="1GiB")(params, x,
    target) -> H``, for small problems.

    ``argnums=0``: a ``(P, P)`` matrix over the ``P`` parameters flattened in the order of
    ``jax.flatten_util.ravel_pytree(params)`` (leaves in pytree order: layer by layer, each
    layer's dict by sorted key, each leaf row-major). ``argnums=1``: shape ``x.shape + x.shape``
    (as ``jax.hessian``; for a batch it couples all examples).

    Cost: ``P`` (or ``x.size``) Hessian-vector products of :func:`hvp`, one per unit vector,
    batched with ``jax.vmap`` (``chunk``: that many at a time, ``jax.lax.map``): memory ``P²`` for
    the result plus the tangent passes of the HVPs run at once. ``jax.hessian`` (``jacfwd`` of
    ``jacrev``) pushes the same ``P`` tangents through a reverse pass, so both do ``P`` HVPs'
    work. ``memory_limit`` (bytes or ``"1GiB"``, the default): a Hessian whose result alone would
    take more is refused before anything is allocated, with a message pointing to :func:`hvp`
    (the products without the matrix); ``None`` lifts the limit. ``checkpoint``: passed to :func:`hvp`.
    """
    where = "jacket.hessian"
    product = hvp(chain, loss, argnums=argnums, checkpoint=checkpoint)
    chunk = check_chunk(chunk, where)
    limit = check_memory_limit(memory_limit, where)

    def refuse_if_large(n, dtype):
        need = n * n * jnp.dtype(dtype).itemsize
        if limit is not None and need > limit:
            what = "parameters" if argnums == 0 else "input entries"
            raise ValueError(f"{where}: the Hessian over {n:,} {what} is a {n:,} × {n:,} matrix of {need / 1e9:.3g} GB "
                             f"in {jnp.dtype(dtype)}, more than memory_limit={limit:,} bytes; use jacket.hvp(…) for "
                             f"Hessian-vector products without the matrix (or pass a larger memory_limit)")

    def columns(fn, units):
        if chunk is not None and chunk < units.shape[0]:
            return jax.lax.map(fn, units, batch_size=chunk)
        return jax.vmap(fn)(units)

    def hessian_fn(params, x, target):
        if argnums == 0:
            flat, unravel = ravel_pytree(params)
            refuse_if_large(flat.size, flat.dtype)
            units = jnp.eye(flat.size, dtype=flat.dtype)
            rows = columns(lambda e: ravel_pytree(product(params, x, target, unravel(e)))[0], units)
            return rows.T  # rows[k] = H e_k, column k of H
        x = jnp.asarray(x)
        n = x.size
        refuse_if_large(n, x.dtype)
        units = jnp.eye(n, dtype=x.dtype).reshape((n,) + x.shape)
        rows = columns(lambda e: product(params, x, target, e), units)
        return rows.reshape(n, n).T.reshape(x.shape + x.shape)
    return hessian_fn
