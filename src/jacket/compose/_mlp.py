"""The one MLP builder: Dense layers between given widths, an activation between them."""
from __future__ import annotations

from typing import Sequence

from ..core import positive_int
from ._chain import Chain

__all__ = ["mlp"]


def mlp(widths: Sequence[int], activation="tanh", *, bias: bool = True, final=None) -> Chain:
    """``Chain([Dense(n_0, n_1), act, Dense(n_1, n_2), act, …, Dense(n_{L-1}, n_L)])``.

    ``activation``: a name (``"tanh"``, ``"relu"``, … from ``jacket.layers.ACTIVATIONS``), a
    Layer class or instance, or ``None`` for a purely linear chain; ``final``: a layer appended
    after the last Dense (e.g. ``jacket.LogSoftmax()``). ``mlp([784, 512, 10])`` is a 784-512-10
    tanh network.
    """
    from ..layers import Dense
    from ..layers import activation as make_activation
    widths = [positive_int(w, f"mlp width {i}") for i, w in enumerate(widths)]
    if len(widths) < 2:
        raise ValueError(f"mlp needs at least two widths (input and output), got {widths}")
    layers = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(Dense(a, b, bias=bias))
        if k < len(widths) - 2:
            act = make_activation(activation)
            if act is not None:
                layers.append(act)
    if final is not None:
        layers.append(make_activation(final))
    return Chain(layers)
