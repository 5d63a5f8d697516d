"""The layer protocol: static configuration, shapes, tangent conventions and input checks."""
from ._counts import param_count
from ._footprint import Footprint, measure_footprint
from ._layer import Elementwise, Layer
from ._shapes import as_shape, positive_int, size
from ._tangents import call_jvp, call_vjp, call_vjp_jvp, zeros_like_tree

__all__ = ["Layer", "Elementwise", "as_shape", "positive_int", "size", "call_jvp", "call_vjp", "call_vjp_jvp",
           "zeros_like_tree", "param_count",
           "Footprint", "measure_footprint"]
