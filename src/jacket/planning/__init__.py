"""Plans: nodes (the moves), the cost models (fma, calibrated), the order grammar, the optimal DP,
Plan with its table and picture. A new move is a node class in ``_nodes.py`` with its fma in
``_model.py``, its price under a cost model in ``_costs.py`` and its candidates in ``_dp.py``."""
from ._costs import FMA, CalibratedCost, CostModel, Rates
from ._limit import parse_bytes, smallest_limit
from ._memory import MemoryEstimate
from ._model import Model
from ._nodes import Adj, Execution, Jac, Mul, Node, Tan
from ._orders import parse_order
from ._plan import Plan, make_plan, optimal_plan

__all__ = ["Plan", "make_plan", "optimal_plan", "CostModel", "FMA", "CalibratedCost", "Rates", "Model", "Node", "Jac", "Tan", "Adj", "Mul", "Execution",
           "parse_order", "MemoryEstimate", "smallest_limit", "parse_bytes"]
