"""Per-example quantities from the layers' own rules: per-example gradients and the empirical
neural tangent kernel (NTK). Both are built on the engine's backprop and on the parameter
Jacobian's plans (``planning/_params.py``); no JAX autodiff is used, only the rules and ``jax.vmap``.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from ..checkpointing import schedule
from ..core._shapes import split_batch
from ..core._tangents import RuleOutputError
from ._backprop import _chain_of, _once
from ._options import check_checkpoint, check_loss, check_order

__all__ = ["per_example_grads", "ntk", "ntk_costs"]


def per_example_grads(chain, loss, *, checkpoint=None) -> Callable:
    """``per_example_grads(chain, loss, *, checkpoint=None)(params, x, target) -> (values, grads)``.

    ``x``: ``(batch,) + s_0``; ``target``: a leading batch axis (then what ``loss`` takes for one
    example). ``values[b] = loss.apply(chain.apply(params, x[b]), target[b])``, shape ``(batch,)``
    (each example's own loss: the built-in losses then average over that example's outputs or
    positions only, not over the batch); ``grads``: like ``params`` with a leading ``(batch,)``
    axis on every leaf, the gradient of ``values[b]``. Equal to ``jax.vmap(jax.grad(...))``.

    It is ``jax.vmap`` over examples of :func:`jacket.value_and_grad` on one example: under
    ``jax.jit`` XLA batches it into one forward and one backward pass over the whole batch (a
    Dense layer's per-example weight gradient becomes one batched outer product), no loop.
    ``checkpoint``: as :func:`jacket.value_and_grad` (``"sqrt"``, ``"two-level"``,
    ``("binomial", B)``, a number of segments or interior boundaries); its ``cond`` predicates
    come from the params, unbatched, so under the ``vmap`` they stay ``cond``s and the
    recomputation stays separate.
    """
    where = "jacket.per_example_grads"
    chain = _chain_of(chain, where)
    loss = check_loss(loss, where)
    check_checkpoint(checkpoint, where, boundaries_allowed=True)
    schedule(len(chain), checkpoint)  # a checkpoint that does not fit this chain: an error now

    def one(params, x, target):
        return _once(chain, loss, checkpoint, params, x, target)

    def per_example_grads_fn(params, x, target):
        chain.check_params(params, where)
        x = chain.check_input(x, where)
        if not split_batch(x.shape, chain.in_shape, where):
            raise ValueError(f"{where}: x must have a batch axis, (batch,) + {chain.in_shape}, "
                             f"got one example of shape {tuple(x.shape)}")
        t_shape = tuple(jnp.shape(target))
        if not t_shape or t_shape[0] != x.shape[0]:
            raise ValueError(f"{where}: target must have the batch axis of x ({x.shape[0]}) "
                             f"first, got shape {t_shape}")
        # the whole batch against the loss before the vmap, where concrete targets can be read
        loss.check(jax.ShapeDtypeStruct(x.shape[:1] + chain.out_shape, x.dtype), target)
        try:
            return jax.vmap(one, in_axes=(None, 0, 0))(params, x, target)
        except RuleOutputError as err:
            raise err.at(where) from None
    return per_example_grads_fn


def ntk(chain, *, implementation="auto", trace=False, order="reverse") -> Callable:
    """``ntk(chain, *, implementation="auto", trace=False, order="reverse")(params, x1, x2=None)``:
    the empirical neural tangent kernel ``Θ(x1, x2) = Σ_leaves J(x1) J(x2)ᵀ`` (J the parameter
    Jacobian of one example, flattened to ``(n_N, P_leaf)``), shape ``(n1, n2) + s_N + s_N``;
    ``x1``: ``(n1,) + s_0``, ``x2``: ``(n2,) + s_0`` (default ``x1``). With ``trace=True``:
    ``(n1, n2)``, the *mean* over the ``n_N`` diagonal output pairs, ``Σ_a Θ[i, j, a, a] / n_N``
    (neural-tangents' ``trace_axes`` normalisation).

    ``implementation``: ``"jacobian"`` contracts the parameter Jacobians of both batches (planned
    in ``order``, as ``jacket.jacobian(chain, 0, order=…)``); ``"ntvp"`` forms NTK-vector products
    ``Θ v = J(x1) (J(x2)ᵀ v)``: the ``n2 · n_N`` unit cotangents pulled back through x2's tape,
    then each pushed as a params tangent through x1's batch; ``"auto"`` picks the cheaper by the
    layers' declared costs (:func:`ntk_costs`), as neural-tangents' implementations 1/2.
    """
    where = "jacket.ntk"
    chain = _chain_of(chain, where)
    if implementation not in ("auto", "jacobian", "ntvp"):
        raise ValueError(f"{where}: implementation must be 'auto', 'jacobian' or 'ntvp', got {implementation!r}")
    if not isinstance(trace, bool):
        raise TypeError(f"{where}: trace must be True or False, got {trace!r}")
    check_order(order, where)
    from ..planning import make_plan
    plan = make_plan(chain, order, argnums=0)
    reverse = make_plan(chain, "reverse", argnums=0)

    def ntk_fn(params, x1, x2=None):
        chain.check_params(params, where)
        x2 = x1 if x2 is None else x2
        for name, x in (("x1", x1), ("x2", x2)):
            x = chain.check_input(x, where, name)
            if not split_batch(x.shape, chain.in_shape, where, name):
                raise ValueError(f"{where}: {name} must have a batch axis, (n,) + {chain.in_shape}, "
                                 f"got shape {tuple(x.shape)}")
        impl = implementation
        if impl == "auto":
            costs = ntk_costs(chain, x1.shape[0], x2.shape[0], trace, order)
            impl = min(costs, key=costs.get)
        try:
            return _ntk(chain, impl, plan if impl == "jacobian" else reverse, trace, params, jnp.asarray(x1),
                        jnp.asarray(x2))
        except RuleOutputError as err:
            raise err.at(where) from None
    return ntk_fn


def ntk_costs(chain, n1: int, n2: int, trace: bool = False, order="reverse") -> dict:
    """Model fma of the two NTK implementations for batches of n1 and n2 examples:
    ``"jacobian"``: both Jacobians, ``(n1 + n2) · C_J``, plus the contraction ``n1 n2 n_N² P``
    (``n1 n2 n_N P`` traced); ``"ntvp"``: x2's Jacobian by reverse, ``n2 · C_rev``, plus
    ``n2 n_N · n1`` pushes of a params tangent, ``Σ_{t ≥ l₁} jvp_t`` each."""
    from ..planning import make_plan
    plan, reverse = make_plan(chain, order, argnums=0), make_plan(chain, "reverse", argnums=0)
    model = plan.model
    n_out, p = chain.dims[-1], model.total
    push = sum(model.jvp[model.first:])
    jac = (n1 + n2) * plan.fma + n1 * n2 * (n_out if trace else n_out * n_out) * p
    ntvp = n2 * reverse.fma + n2 * n_out * n1 * push
    return {"jacobian": jac, "ntvp": ntvp}


@partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ntk(chain, impl, plan, trace, params, x1, x2):
    from ..compose import push
    from ..execute import params_jacobian
    n1, n2, out = x1.shape[0], x2.shape[0], chain.out_shape
    n_out = chain.dims[-1]
    if impl == "jacobian":
        j1, j2 = (params_jacobian(chain, plan, params, x, batched=True) for x in (x1, x2))
        flat = lambda j, n: j.reshape(n, n_out, -1)  # noqa: E731
        spec = "iap,jap->ij" if trace else "iap,jbp->ijab"
        theta = sum(jnp.einsum(spec, flat(a, n1), flat(b, n2))
                    for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)))
        return theta / n_out if trace else theta.reshape((n1, n2) + out + out)
    j2 = params_jacobian(chain, plan, params, x2, batched=True)  # leaves (n2,) + s_N + leaf
    j2 = jax.tree_util.tree_map(lambda b: b.reshape((n2 * n_out,) + b.shape[1 + len(out):]), j2)

    def push_one(p_dot):
        y_dot = push(chain, params, x1, None, p_dot)[1]
        return jnp.zeros((n1,) + out, x1.dtype) if y_dot is None else y_dot
    cols = jax.vmap(push_one)(j2).reshape(n2, n_out, n1, n_out)  # [j, b, i, a] = Θ[i, j, a, b]
    theta = jnp.transpose(cols, (2, 0, 3, 1))
    if trace:
        return jnp.trace(theta, axis1=2, axis2=3) / n_out
    return theta.reshape((n1, n2) + out + out)
