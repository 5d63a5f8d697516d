"""Compositions of layers: Chain, the MLP builder, backpropagation through a loss, and Jacobians
with respect to the parameters (per-example gradients, the empirical NTK), and curvature
products (Hessian- and Gauss-Newton-vector products, small dense Hessians)."""
from ._backprop import value_and_grad
from ._blocks import Block, Parallel, Residual
from ._chain import Chain
from ._curvature import ggn_vp, hessian, hvp
from ._mlp import mlp
from ._params import ParamsPlan, params_jacobian, params_jacobian_costs, params_plan
from ._per_example import ntk, ntk_costs, per_example_grads

__all__ = ["Chain", "Residual", "Parallel", "Block", "mlp", "value_and_grad", "params_jacobian",
           "params_jacobian_costs", "params_plan", "ParamsPlan", "per_example_grads", "ntk", "ntk_costs", "hvp", "ggn_vp", "hessian"]
