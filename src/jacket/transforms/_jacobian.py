"""The front door for Jacobians: ``jacket.jacobian`` and ``jacket.plan``, in the style of
``jax.jacfwd``: a function of the chain, ``argnums`` and keyword options that returns a function
of the chain's own arguments ``(params, x)``.

``argnums=1`` is the Jacobian with respect to the input, ``argnums=0`` the one with respect to
the parameters, a tuple both (as ``jax.jacfwd(chain, argnums)`` returns them). A batch is handled
as JAX handles it: ``jax.vmap(jacket.jacobian(chain, 1), in_axes=(None, 0))`` gives the per-example
Jacobians, and a call on a batch ``(B,) + s_0`` the Jacobian of the batched output,
``(B,) + s_N + (B,) + s_0`` (zero between different examples).

Every option is checked and resolved here, once: ``cost="calibrated"`` loads (or measures) this
device's rates when the transform is made, ``order="fastest"`` is autotuned on the first call
(per dtype); the planner below takes cost models and plans only.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core._tangents import RuleOutputError
from ._options import (as_chain, check_argnums, check_checkpoint, check_chunk, check_memory_limit, check_mesh,
                       check_order, resolve_cost)

__all__ = ["jacobian", "plan"]


def jacobian(fun, argnums=0, *, order="optimal", cost="fma", chunk=None, checkpoint=None, memory_limit=None,
             mesh=None):
    """``jacobian(chain, argnums=0, *, order="optimal", …)(params, x)``: the Jacobian of
    ``chain(params, x)`` accumulated with the layers' own rules, equal to
    ``jax.jacfwd(chain, argnums)(params, x)``.

    Returns, for one example ``x`` of shape ``s_0`` (the chain's ``in_shape``):

    * ``argnums=1``: an array ``s_N + s_0`` (on a batch ``(B,) + s_0``: ``(B,) + s_N + (B,) + s_0``,
      block diagonal; ``jax.vmap`` over x gives the per-example ``(B,) + s_N + s_0``);
    * ``argnums=0``: a pytree like ``params`` with leaves ``s_N + leaf_shape`` (on a batch,
      ``(B,) + s_N + leaf_shape``);
    * a tuple ``argnums``: a tuple of those.

    Options (keyword-only, spelled the same in every transform):

    * ``order``: ``"optimal"`` (the cheapest plan under ``cost``), ``"forward"``, ``"reverse"``,
      ``"fastest"`` (the best few plans compiled and timed here, the winner cached on disk), a
      bracketing such as ``"(J3 (J2 J1))"`` or a :class:`~jacket.Plan` from :func:`plan`
      (``argnums=0``: forward, reverse, optimal or segments such as ``"adj(J5..J3) tan(J2 J1)"``);
      for a tuple of argnums, one order for all or a tuple of orders;
    * ``cost``: ``"fma"`` (exact, machine-independent) or ``"calibrated"`` (predicted seconds from
      rates measured on this device, ``jacket calibrate``);
    * ``chunk``: every TAN/ADJ sweep runs that many seed vectors at a time (less memory);
    * ``checkpoint``: every ADJ sweep recomputes activations under a schedule (``"sqrt"``,
      ``"two-level"``, ``("binomial", B)``, a number of segments);
    * ``memory_limit`` (bytes, or ``"64MB"``): the cheapest plan whose predicted bytes for the call
      (arguments, result, temporaries; a batch counts its examples) fit;
    * ``mesh``: a ``jax.sharding.Mesh``: the seeds of every sweep (one example) or the examples (a
      batch) are split across its devices.

    ``chunk``, ``checkpoint``, ``memory_limit``, ``mesh`` and ``cost="calibrated"`` apply to the
    input Jacobian; the parameter Jacobian is planned by fma on one device.
    """
    where = "jacket.jacobian"
    chain, single = as_chain(fun, where)
    nums, one = check_argnums(argnums, where)
    orders = _orders(order, nums, where)
    options = _Options(where, chain, _unmeasured(cost, where), check_chunk(chunk, where),
                       check_checkpoint(checkpoint, where), check_memory_limit(memory_limit, where),
                       check_mesh(mesh, where))
    options.refuse_for_params(nums, orders)
    options.cost = resolve_cost(cost, where)  # after the refusals: "calibrated" may measure

    def jacobian_fn(params, x):
        params, x, batched = options.arrays(params, x, single)
        results = []
        for num, o in zip(nums, orders):
            plan = options.plan(num, o, x, batched)
            try:
                results.append(_input(chain, plan, params, x, batched, options.mesh) if num == 1 else
                               _params(chain, plan, params, x, batched, single))
            except RuleOutputError as err:
                raise err.at(where) from None
        return results[0] if one else tuple(results)
    jacobian_fn.__name__ = f"jacobian_of_chain_argnums_{argnums}"
    jacobian_fn.__doc__ = f"Jacobian of {chain!r} with respect to argnums={argnums!r} (jacket.jacobian)."
    return jacobian_fn


def plan(fun, argnums=0, *, order="optimal", cost="fma", chunk=None, checkpoint=None, memory_limit=None,
         mesh=None):
    """``plan(chain, argnums=0, *, order="optimal", …)(params, x)``: the :class:`~jacket.Plan` that
    :func:`jacobian` with the same arguments runs (a tuple of plans for a tuple of argnums).

    ``params`` and ``x`` may be arrays, ``jax.ShapeDtypeStruct`` s (nothing is computed) or, for
    ``params``, ``None``: only x's shape (one example or a batch, whose size the memory model
    counts) and dtype matter. ``mesh`` may also be a number of devices (the plan of seeds split
    over that many). ``print(plan)`` shows its table: one row per step with fma and the bytes
    model; ``plan.order`` re-parses to the same plan, and the plan can be passed back as
    ``order=``."""
    where = "jacket.plan"
    chain, single = as_chain(fun, where)
    nums, one = check_argnums(argnums, where)
    orders = _orders(order, nums, where)
    options = _Options(where, chain, _unmeasured(cost, where), check_chunk(chunk, where),
                       check_checkpoint(checkpoint, where), check_memory_limit(memory_limit, where),
                       check_mesh(mesh, where, count_allowed=True))
    options.refuse_for_params(nums, orders)
    options.cost = resolve_cost(cost, where)  # after the refusals: "calibrated" may measure

    def plan_fn(params, x):
        if params is not None:
            options.arrays(params, x, single)
        x = chain.check_input(x, where)
        batched = len(x.shape) == len(chain.in_shape) + 1
        plans = tuple(options.plan(num, o, x, batched) for num, o in zip(nums, orders))
        return plans[0] if one else plans
    return plan_fn


def _orders(order, nums, where):
    if isinstance(order, (tuple, list)):
        if len(order) != len(nums):
            raise ValueError(f"{where}: order has {len(order)} entries for argnums {nums}; give one order, or one "
                             f"per argnum")
        return tuple(check_order(o, where) for o in order)
    return (check_order(order, where),) * len(nums)


def _unmeasured(cost, where):
    """``cost`` checked as :func:`resolve_cost` checks it, but ``"calibrated"`` left a name, so that
    the refusals come before anything is measured (resolved after them)."""
    if isinstance(cost, str) and cost.strip().lower() == "calibrated":
        return "calibrated"
    return resolve_cost(cost, where)


class _Options:
    """The checked options of one transform, and how they become a plan for given inputs."""

    def __init__(self, where, chain, cost, chunk, checkpoint, memory_limit, mesh):
        self.where, self.chain, self.cost = where, chain, cost
        self.chunk, self.checkpoint, self.memory_limit, self.mesh = chunk, checkpoint, memory_limit, mesh

    def refuse_for_params(self, nums, orders):
        named = [f"{name}={value!r}" for name, value in (("chunk", self.chunk), ("checkpoint", self.checkpoint),
                                                         ("memory_limit", self.memory_limit)) if value is not None]
        if self.mesh is not None:
            named.append("mesh=…")
        cost = self.cost if isinstance(self.cost, str) else self.cost.name
        if cost != "fma":
            named.append(f"cost={cost!r}")
        if 0 in nums and named:
            raise ValueError(f"{self.where}: the parameter Jacobian (argnums=0) is planned by fma on one device, "
                             f"without chunks, checkpoints or a memory limit for now; got {', '.join(named)}")
        for num, order in zip(nums, orders):
            if isinstance(order, str) and order.strip().lower() == "fastest":
                if num == 0:
                    raise ValueError(f"{self.where}: order='fastest' tunes the input Jacobian (argnums=1); for the "
                                     f"parameters use 'optimal'")
                if self.memory_limit is not None:
                    raise ValueError(f"{self.where}: order='fastest' does not take a memory_limit yet: use "
                                     f"'optimal' (the cheapest plan that fits; cost='calibrated' for predicted time)")
                if self.mesh is not None:
                    raise ValueError(f"{self.where}: order='fastest' tunes plans on one device; use 'optimal' with "
                                     f"a mesh")

    def arrays(self, params, x, single):
        chain = self.chain
        params = (params,) if single else params
        chain.check_params(params, self.where)
        x = chain.check_input(x, self.where)
        return params, x, x.ndim == len(chain.in_shape) + 1

    def devices(self, batched):
        if self.mesh is None or batched:
            return 1  # a batch on a mesh: the examples are split, each device runs the one-device plan
        return self.mesh if isinstance(self.mesh, int) else self.mesh.size

    def plan(self, num, order, x, batched):
        from ..planning import make_plan
        chain = self.chain
        if num == 0:
            return make_plan(chain, order, argnums=0)
        dtype = jnp.dtype(x.dtype)
        if isinstance(order, str) and order.strip().lower() == "fastest":
            from ..tuning import fastest_plan
            return make_plan(chain, fastest_plan(chain, dtype=dtype), chunk=self.chunk, checkpoint=self.checkpoint,
                             dtype=dtype)
        examples = x.shape[0] if batched else 1
        if self.mesh is not None and batched and not isinstance(self.mesh, int):
            examples = -(-examples // self.mesh.size)
        if self.chunk is not None and self.mesh is not None and not batched:
            raise ValueError(f"{self.where}: chunk= and mesh= don't combine for one example (the mesh already splits "
                             f"the seeds)")
        return make_plan(chain, order, devices=self.devices(batched), cost=self.cost, chunk=self.chunk,
                         checkpoint=self.checkpoint, memory_limit=self.memory_limit, dtype=dtype, batch=examples)


def _input(chain, plan, params, x, batched, mesh):
    from ..execute import input_jacobian
    jac = input_jacobian(chain, plan, params, x, batched, mesh if isinstance(mesh, jax.sharding.Mesh) else None)
    if not batched:
        return jac
    # jax.jacfwd of a batched call: each output row depends on its own example only
    count, n_out, n_in = x.shape[0], chain.dims[-1], chain.dims[0]
    flat = jac.reshape(count, n_out, n_in)
    eye = jnp.eye(count, dtype=jac.dtype)
    full = flat[:, :, None, :] * eye[:, None, :, None]
    return full.reshape((count,) + chain.out_shape + (count,) + chain.in_shape)


def _params(chain, plan, params, x, batched, single):
    from ..execute import params_jacobian
    jac = params_jacobian(chain, plan, params, x, batched)
    return jac[0] if single else jac
