"""The front door: functions of a chain (and a loss) that return functions of its arguments, as
``jax.jacfwd`` does, every option keyword-only and spelled the same everywhere.

* ``jacobian(chain, argnums=0, *, order, cost, chunk, checkpoint, memory_limit, mesh)(params, x)``
  and ``plan(chain, argnums=0, *, …)(params, x)`` (``_jacobian.py``);
* ``value_and_grad(chain, loss, *, checkpoint)(params, x, target)`` (``_backprop.py``);
* ``per_example_grads(chain, loss, *, checkpoint)`` and ``ntk(chain, *, implementation, trace,
  order)`` (``_per_example.py``);
* ``hvp``, ``ggn_vp``, ``hessian(chain, loss, *, argnums, checkpoint, …)(params, x, target[, v])``
  (``_curvature.py``).

Options are checked (``_options.py``) and resolved here, once: ``cost="calibrated"`` and
``order="fastest"`` reach ``jacket.tuning``; the planner below takes cost models and plans.
"""
from ._backprop import value_and_grad
from ._curvature import HESSIAN_LIMIT, ggn_vp, hessian, hvp
from ._jacobian import jacobian, plan
from ._per_example import ntk, ntk_costs, per_example_grads

__all__ = ["jacobian", "plan", "value_and_grad", "per_example_grads", "ntk", "ntk_costs", "hvp", "ggn_vp",
           "hessian", "HESSIAN_LIMIT"]
