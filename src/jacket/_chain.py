"""Chain: the composition f_N ∘ … ∘ f_1, differentiated by composing the layers' rules.

Forward accumulation pushes a tangent from input to output through the JVP rules; reverse
accumulation pulls a cotangent from output to input through the VJP rules, over the activations
x_0 … x_N remembered by a forward pass (the tape). ``value_and_grad`` is backpropagation.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from ._checks import check_input, check_like
from ._layer import Layer

__all__ = ["Chain", "value_and_grad"]


class Chain:
    """``Chain(layers, in_dim=None)``: the function ``x ↦ f_N(… f_1(x))``.

    ``in_dim`` is needed only when the first layer doesn't fix its input width (an activation).
    ``chain.dims = (n_0, …, n_N)``; layer ``i`` (counted from 1, as J_i) maps width n_{i-1}
    to n_i. Params are a tuple with one pytree per layer. A Chain is immutable and hashable,
    so it can be a static argument of ``jax.jit``.
    """

    def __init__(self, layers: Sequence[Layer], in_dim: int | None = None):
        layers = tuple(layers)
        if not layers:
            raise ValueError("Chain needs at least one layer")
        for i, layer in enumerate(layers, 1):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} is {layer!r} ({type(layer).__name__}), not a jacket.Layer")
            if not callable(getattr(layer, "out_dim", None)):
                raise TypeError(f"layer {i} ({type(layer).__name__}) has an attribute named 'out_dim' that "
                                f"hides the method out_dim(in_dim); rename the attribute")
        first = layers[0].required_in_dim()
        if in_dim is None:
            if first is None:
                raise ValueError(f"Chain: the first layer {layers[0]!r} takes any width; pass in_dim=")
            in_dim = first
        # int(3.5) would pass silently as 3, and width 0 would surface as a layer's error
        if isinstance(in_dim, bool) or not float(in_dim).is_integer() or int(in_dim) < 1:
            raise ValueError(f"Chain: in_dim must be a positive integer, got {in_dim!r}")
        dims = [int(in_dim)]
        for i, layer in enumerate(layers, 1):
            n = dims[-1]
            wanted = layer.required_in_dim()
            if wanted is not None and wanted != n:
                source = "the chain's input" if i == 1 else f"layer {i - 1} ({layers[i - 2]!r})"
                raise ValueError(f"Chain: layer {i} ({layer!r}) takes inputs of width {wanted}, "
                                 f"but {source} gives width {n}")
            try:
                out = int(layer.out_dim(n))
            except Exception as err:
                raise ValueError(f"Chain: layer {i} ({layer!r}) rejects input width {n}: {err}") from err
            if out < 1:
                raise ValueError(f"Chain: layer {i} ({layer!r}) gives output width {out} for input width {n}")
            dims.append(out)
        self._layers = layers
        self._dims = tuple(dims)

    # ---- static structure -------------------------------------------------------------
    @property
    def layers(self) -> tuple[Layer, ...]:
        return self._layers

    @property
    def dims(self) -> tuple[int, ...]:
        """``(n_0, …, n_N)``: input width, then each layer's output width."""
        return self._dims

    def __len__(self):
        return len(self._layers)

    def __iter__(self):
        return iter(self._layers)

    def __getitem__(self, i):
        return self._layers[i]

    def __eq__(self, other):
        return isinstance(other, Chain) and (self._layers, self._dims) == (other._layers, other._dims)

    def __hash__(self):
        return hash((Chain, self._layers, self._dims))

    def __repr__(self):
        inner = ", ".join(map(repr, self._layers))
        return f"Chain([{inner}], dims={self._dims})"

    # ---- checks ------------------------------------------------------------------------
    def _check_params(self, params, where):
        if not isinstance(params, (tuple, list)) or len(params) != len(self._layers):
            got = f"a {type(params).__name__} of length {len(params)}" if isinstance(params, (tuple, list)) \
                else type(params).__name__
            raise ValueError(f"{where}: params must be a tuple with one entry per layer "
                             f"({len(self._layers)}), got {got}")

    def _check_x(self, x, where):
        return check_input(x, self._dims[0], where)

    def _check_params_dot(self, params, params_dot, where):
        """Each non-empty entry of ``params_dot`` must have its layer's params' structure and shapes
        (otherwise a rule fails deep inside with a KeyError or an XLA shape error)."""
        self._check_params(params_dot, f"{where} (params_dot)")
        for i, (layer, p, p_dot) in enumerate(zip(self._layers, params, params_dot), 1):
            if _is_absent(p_dot):
                continue
            p_def, d_def = jax.tree_util.tree_structure(p), jax.tree_util.tree_structure(p_dot)
            if d_def != p_def:
                raise ValueError(f"{where}: params_dot for layer {i} ({layer!r}) has structure {d_def}, "
                                 f"but that layer's params have structure {p_def}")
            leaves = zip(jax.tree_util.tree_leaves_with_path(p), jax.tree_util.tree_leaves(p_dot))
            for (path, a), b in leaves:
                if jnp.shape(a) != jnp.shape(b):
                    raise ValueError(f"{where}: params_dot{jax.tree_util.keystr(path)} for layer {i} "
                                     f"({layer!r}) has shape {jnp.shape(b)} but the params have "
                                     f"shape {jnp.shape(a)}")

    # ---- primal ------------------------------------------------------------------------
    def init(self, key, dtype=jnp.float32) -> tuple:
        """One params pytree per layer, floating leaves cast to ``dtype``."""
        keys = jax.random.split(key, len(self._layers))
        params = tuple(layer.init(k) for layer, k in zip(self._layers, keys))

        def cast(a):
            return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a
        return jax.tree_util.tree_map(cast, params)

    def apply(self, params, x):
        """``y = f_N(… f_1(x))``; x: ``(n_0,)`` or ``(batch, n_0)`` -> y: ``(n_N,)`` or ``(batch, n_N)``."""
        return self.forward(params, x)[0]

    def forward(self, params, x):
        """``(y, tape)`` with ``tape = (x_0, …, x_N)``, the activations reverse mode needs."""
        self._check_params(params, "Chain.forward")
        x = self._check_x(x, "Chain.forward")
        tape = [x]
        for layer, p in zip(self._layers, params):
            tape.append(layer.apply(p, tape[-1]))
        return tape[-1], tuple(tape)

    # ---- forward accumulation ----------------------------------------------------------
    def jvp(self, params, x, x_dot, params_dot=None):
        """Forward accumulation: ``(y, y_dot)``, pushing ``x_dot`` (shape of x) and optionally
        ``params_dot`` (pytree like params, ``None`` entries for absent tangents) input to output."""
        self._check_params(params, "Chain.jvp")
        x = self._check_x(x, "Chain.jvp")
        if x_dot is not None:
            x_dot = check_like(x_dot, x, "Chain.jvp", "x_dot", "x")
        if params_dot is not None:
            self._check_params_dot(params, params_dot, "Chain.jvp")
        else:
            params_dot = (None,) * len(self._layers)
        for layer, p, p_dot in zip(self._layers, params, params_dot):
            y = layer.apply(p, x)
            x_dot = layer.jvp(p, x, y, x_dot, None if _is_absent(p_dot) else p_dot)
            x = y
        if x_dot is None:
            x_dot = jnp.zeros_like(x)
        return x, x_dot

    # ---- reverse accumulation ----------------------------------------------------------
    def vjp(self, params, x):
        """Reverse accumulation: ``(y, pullback)``, ``pullback(y_bar) -> (params_bar, x_bar)``,
        as ``jax.vjp(chain.apply, params, x)``. The pullback runs the VJP rules from the last
        layer back to the first over the tape of one forward pass."""
        y, tape = self.forward(params, x)

        def pullback(y_bar):
            y_bar = check_like(y_bar, y, "Chain.vjp pullback", "y_bar", "the output y")
            return self._pull(params, tape, y_bar)
        return y, pullback

    def _pull(self, params, tape, y_bar):
        params_bar = [None] * len(self._layers)
        for i in reversed(range(len(self._layers))):
            params_bar[i], y_bar = self._layers[i].vjp(params[i], tape[i], tape[i + 1], y_bar)
        return tuple(params_bar), y_bar

    # ---- orders (see planner.py) -------------------------------------------------------
    def plan(self, order="optimal", devices: int = 1):
        """The static :class:`~jacket.Plan` for ``order`` (no arrays needed). With ``devices > 1``
        the TAN/ADJ seeds are split across that many devices and costs are per device."""
        from .planner import make_plan
        return make_plan(self, order, devices)

    def jacobian(self, params, x, order="optimal", mesh=None):
        """The ``(n_N, n_0)`` Jacobian at x ``(n_0,)`` (or ``(batch, n_N, n_0)`` for a batch),
        accumulated in ``order``: ``"forward"``, ``"reverse"``, ``"optimal"``, a bracketing such
        as ``"(J3 (J2 J1))"``, or a :class:`~jacket.Plan`. With a ``jax.sharding.Mesh``, the seeds of
        every TAN/ADJ step (and the batch, for a batched x) are split across its devices."""
        from .executor import jacobian
        return jacobian(self, params, x, order, mesh)


def _is_absent(tangent) -> bool:
    """``None``, ``{}`` or any pytree without leaves: no tangent. (Not ``not tangent``: the
    truth value of an array params tangent is an error, or a tracer error under jit.)"""
    return not jax.tree_util.tree_leaves(tangent)


def value_and_grad(chain: Chain, loss) -> Callable:
    """Backpropagation: ``value_and_grad(chain, loss)(params, x, target) -> (value, params_grad)``.

    One forward pass records the tape; the loss's VJP seeds ``y_bar``; the layers' VJP rules pull
    it back. ``params_grad`` has the structure of ``params``. Pure: compose with ``jax.jit``.
    """
    if not isinstance(chain, Chain):
        raise TypeError(f"value_and_grad expects a jacket.Chain, got {type(chain).__name__}")

    def value_and_grad_fn(params, x, target):
        y, tape = chain.forward(params, x)
        value = loss.apply(y, target)
        params_bar, _ = chain._pull(params, tape, loss.vjp(y, target, value, jnp.ones((), y.dtype)))
        return value, params_bar
    return value_and_grad_fn
