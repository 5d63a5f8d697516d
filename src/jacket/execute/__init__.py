"""Running plans on arrays: the executor, and device placement over a mesh (``sharding``)."""
from . import sharding
from ._executor import input_jacobian, jacobian_operator, params_jacobian
from .sharding import data_parallel, make_mesh

__all__ = ["input_jacobian", "params_jacobian", "jacobian_operator", "sharding", "make_mesh", "data_parallel"]
