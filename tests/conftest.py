"""Shared test configuration: float64 enabled, ``key`` and ``rng`` fixtures, and the tables other
test files parametrise over (layer factories, dtypes with their tolerances) plus small helpers to
draw parameters and inputs and compare pytrees.

Rank promotion is left at JAX's default ("allow"): the built-in layers broadcast a parameter of
shape ``(n,)`` against a batch ``(batch, n)`` (Dense's bias, LayerNorm's scale and offset), which
is the intended batching convention, and ``"raise"`` rejects exactly that.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

# The suite's programs are small and run once or twice: compiling them is most of its run time,
# and XLA's backend optimisations cost more compile time than they save (as in jacket.testing).
# Set before JAX starts; results are unchanged (no fast-math), only code generation is simpler.
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

import jax  # noqa: E402

# Before any array exists: float64 makes the tight comparisons possible.
jax.config.update("jax_enable_x64", True)

# tests/execute/multidevice needs several devices; tests/execute/test_sharding.py runs it in a subprocess with
# simulated CPU devices, so a plain run (one device) does not collect it at all.
collect_ignore = ["execute/multidevice"] if jax.device_count() < 2 else []

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import jacket  # noqa: E402


# ---- dtypes and tolerances ---------------------------------------------------------------
@dataclass(frozen=True)
class DType:
    """A floating dtype with the tolerances used to compare it against JAX's reference."""

    name: str
    dtype: object
    rtol: float
    atol: float

    def __repr__(self):
        return self.name


# float32: rules and reference round differently, and cancellations (LayerNorm, Softmax) cost a
# few ulps more. float64: the rules are algebraically exact, so only rounding remains.
FLOAT32 = DType("float32", jnp.float32, rtol=2e-5, atol=2e-6)
FLOAT64 = DType("float64", jnp.float64, rtol=1e-10, atol=1e-12)
DTYPES = [FLOAT32, FLOAT64]


# ---- the layer table ---------------------------------------------------------------------
# (id, factory(width) -> layer), from the one registry (jacket/registry.py): adding a built-in
# there adds it to every layer test. Dense layers appear square and widening.
LAYERS = [("dense_square", lambda n: jacket.Dense(n, n))] + [
    (entry.name, (lambda e: lambda n: e.build(n, n + 2))(entry)) for entry in jacket.registry.LAYERS]
LAYER_IDS = [name for name, _ in LAYERS]
LAYER_FACTORIES = [factory for _, factory in LAYERS]


# ---- fixtures ----------------------------------------------------------------------------
@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture
def rng():
    """Test data comes from NumPy: a JAX draw compiles a random-number program for every new
    shape and dtype, which would dominate the suite's run time."""
    return np.random.default_rng(0)


# ---- drawing inputs and parameters -------------------------------------------------------
def normal(rng, shape, dtype):
    return jnp.asarray(rng.standard_normal(shape), dtype)


def away_from_kinks(rng, shape, dtype, margin=0.1):
    """Normal draws pushed out of (-margin, margin): ReLU's kink at 0 is never hit, and finite
    rounding near it cannot flip the derivative."""
    z = rng.standard_normal(shape)
    return jnp.asarray(np.where(z >= 0, z + margin, z - margin), dtype)


def random_like(rng, tree, dtype):
    """A pytree with the structure and shapes of ``tree``, normal entries of ``dtype``."""
    return jax.tree_util.tree_map(lambda a: normal(rng, np.shape(a), dtype), tree)


def random_params(layer, rng, dtype):
    """Random (not initial) parameters: LayerNorm's init is scale 1, offset 0, which would hide
    mistakes in the scale and offset terms. Dense weights are scaled by 1/sqrt(n_in).
    Only the shapes of ``layer.init`` are used (``eval_shape``: nothing is compiled)."""
    shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda a: rng.standard_normal(a.shape), shapes)
    if isinstance(layer, jacket.Dense):
        params["w"] = params["w"] / np.sqrt(layer.in_features)
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), params)


def in_shape(width, batch):
    return (width,) if batch is None else (batch, width)


# ---- comparing ---------------------------------------------------------------------------
def assert_close(actual, expected, dt: DType, scale=1.0):
    """Compare arrays (or pytrees of arrays) with ``dt``'s tolerances (times ``scale``)."""
    a_leaves, a_def = jax.tree_util.tree_flatten(actual)
    e_leaves, e_def = jax.tree_util.tree_flatten(expected)
    assert a_def == e_def, f"tree structures differ: {a_def} vs {e_def}"
    for a, e in zip(a_leaves, e_leaves):
        assert jnp.shape(a) == jnp.shape(e), f"shapes differ: {jnp.shape(a)} vs {jnp.shape(e)}"
        np.testing.assert_allclose(np.asarray(a), np.asarray(e),
                                   rtol=dt.rtol * scale, atol=dt.atol * scale)


def tree_vdot(a, b):
    """Σ over leaves of ⟨a_leaf, b_leaf⟩ (0 for empty trees)."""
    return sum((jnp.vdot(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                               jax.tree_util.tree_leaves(b))), jnp.zeros(()))


class ArrayScale(jacket.Layer):
    """A user layer with its own ``__init__`` and a bare array as params: ``y = a ⊙ x``.
    It leaves ``jacobian`` and the costs to the defaults of :class:`jacket.Layer`."""

    def __init__(self, features, label="scale"):
        self.features = features
        self.label = label

    def init(self, key):
        return jax.random.normal(key, (self.features,))

    def input_shape(self):
        return (self.features,)

    def apply(self, params, x):
        return params * x

    def jvp(self, params, x, y, x_dot, params_dot=None):
        y_dot = jnp.zeros_like(y) if x_dot is None else params * x_dot
        return y_dot if params_dot is None else y_dot + params_dot * x

    def vjp(self, params, x, y, y_bar):
        return (y_bar * x).reshape(-1, self.features).sum(axis=0), params * y_bar


def multiplications(jaxpr) -> int:
    """Multiplications in a jaxpr, nested calls included (``jnp.einsum`` is a jitted function):
    a dot_general's output size times its contracted size, an elementwise ``mul`` its output size."""
    count = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            count += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
        elif eqn.primitive.name == "mul":
            count += math.prod(eqn.outvars[0].aval.shape)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", value)  # a ClosedJaxpr holds its Jaxpr
            if hasattr(inner, "eqns"):
                count += multiplications(inner)
    return count


@pytest.fixture(autouse=True)
def _private_jacket_cache(tmp_path_factory, monkeypatch):
    """Every test gets an empty jacket cache (calibrations, autotuned plans): nothing is read from
    or written to the user's, and no test depends on what another measured."""
    monkeypatch.setenv("JACKET_CACHE_DIR", str(tmp_path_factory.mktemp("jacket-cache")))
