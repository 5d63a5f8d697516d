"""jacket: Jacobian products of composed functions, with hand-written JVP/VJP rules.

A network is a chain f_N ∘ … ∘ f_1; its Jacobian is the product J_N ⋯ J_1, and the order of
multiplication decides the cost. jacket composes each layer's own rules into forward and
reverse accumulation, any bracketing, and an optimal mixed-mode plan.

Layout, each folder importing only those before it: ``operators`` (structured Jacobians and
their product rule), ``core`` (the layer protocol, shapes, tangent conventions, checks),
``checkpointing`` (schedules), ``layers`` (built-in layers), ``losses``, ``compose`` (Chain, the
blocks, mlp, the sweeps), ``planning`` (plan nodes, cost models, orders, the DP, the bytes
model), ``execute`` (executor, sharding), ``tuning`` (calibration and autotuning on the device),
``transforms`` (the front door: jacobian, plan, value_and_grad, …), then ``registry`` (the
built-ins by name), ``testing`` (the rule checker), ``interop`` (export to JAX) and ``cli``.
"""
from . import operators, registry, testing
from .compose import Chain, Parallel, Residual, mlp
from .core import Elementwise, Layer
from .execute import data_parallel, make_mesh, sharding
from .interop import to_jax
from .layers import (GELU, AvgPool2D, Conv1D, Conv2D, Dense, Flatten, LayerNorm, LogSoftmax, MaxPool2D,
                     MultiHeadSelfAttention, PositionEmbedding, ReLU, Reshape, Sigmoid, Softmax, Softplus, Tanh)
from .losses import BinaryCrossEntropyWithLogits, Loss, MeanSquaredError, SoftmaxCrossEntropy
from .planning import Plan
from .transforms import ggn_vp, hessian, hvp, jacobian, ntk, per_example_grads, plan, value_and_grad

__version__ = "0.2.0"


def _warn_about_known_bad_jaxlib():
    """jaxlib 0.10.2 miscompiles some float32 broadcast-reduce fusions on the CPU (XLA's YNNPACK
    fusion): under ``jax.jit``, a vmapped softmax rule such as ``s * (a - (s * a).sum(-1))``
    with ``a: (n > 128, 64, 4)`` and ``s: (64, 4)`` returns wrong rows past the 128th, which
    makes e.g. ``jacket.hessian`` of a 676-parameter MLP wrong. pyproject excludes it; this
    catches an environment that has it anyway."""
    import warnings
    try:
        import jaxlib
        version = getattr(jaxlib, "__version__", "")
    except ImportError:  # pragma: no cover - jax without jaxlib cannot run anyway
        return
    if version == "0.10.2":
        warnings.warn("jaxlib 0.10.2 silently miscompiles some float32 broadcast-reduce fusions on the CPU "
                      "(wrong Hessians and Jacobians under a wide vmap); install jaxlib 0.10.1 or a later "
                      "release with the fix", RuntimeWarning, stacklevel=3)


_warn_about_known_bad_jaxlib()

__all__ = [
    "Layer", "Elementwise", "Dense", "Tanh", "Sigmoid", "ReLU", "Softplus", "GELU", "Softmax",
    "LogSoftmax", "LayerNorm", "Loss", "MeanSquaredError", "BinaryCrossEntropyWithLogits",
    "SoftmaxCrossEntropy", "Flatten", "Reshape", "Conv1D", "Conv2D", "AvgPool2D", "MaxPool2D",
    "MultiHeadSelfAttention", "PositionEmbedding", "Chain", "Residual", "Parallel", "mlp", "jacobian", "plan",
    "value_and_grad", "per_example_grads", "ntk", "hvp", "ggn_vp", "hessian", "Plan", "operators", "sharding",
    "make_mesh", "data_parallel", "to_jax", "testing", "registry",
]
