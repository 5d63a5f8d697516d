"""Running plans on arrays: the executor, and device placement over a mesh (``sharding``)."""
from . import sharding
from ._executor import jacobian, jacobian_operator
from .sharding import data_parallel, make_mesh

__all__ = ["jacobian", "jacobian_operator", "sharding", "make_mesh", "data_parallel"]
