"""Plans: nodes (the moves), the cost model, the order grammar, the optimal DP, Plan with its
table and picture. A new move is a node class in ``_nodes.py`` with its cost in ``_model.py``."""
from ._model import Model
from ._nodes import Adj, Execution, Jac, Mul, Node, Tan
from ._orders import format_order, parse_order
from ._plan import Plan, make_plan, optimal_plan

__all__ = ["Plan", "make_plan", "optimal_plan", "Model", "Node", "Jac", "Tan", "Adj", "Mul", "Execution",
           "parse_order", "format_order"]
