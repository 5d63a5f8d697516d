"""The engine's sweeps through a chain's layers: the forward pass that records the tape, forward
accumulation (push), reverse accumulation (pull), and their second-order forms.

Functions of a :class:`~jacket.Chain`, without input checks: the front door (``jacket.jacobian``,
``jacket.value_and_grad``, …) checks what users pass, then calls these. Every rule is called
through ``core/_tangents.py`` (absent tangents, dtypes, and the checks of what a rule returns).

Forward accumulation pushes a tangent from input to output through the JVP rules; reverse
accumulation pulls a cotangent from output to input through the VJP rules, over the activations
``x_0 … x_N`` remembered by a forward pass (the tape). The second-order rule ``vjp_jvp`` composes
the same way: a forward pass with tangents records ``(x_i, x_dot_i)`` for every layer, then a
backward loop carries ``(y_bar, y_bar_dot)`` through each layer's ``vjp`` and ``vjp_jvp``
(forward-over-reverse, ``jacket.hvp``).
"""
from __future__ import annotations

from ..core._tangents import call_jvp, call_vjp, call_vjp_jvp, is_absent, zeros_like_tree

__all__ = ["record", "push", "pull", "record_tangents", "pull_tangents"]


def _like(params, items):
    """``items`` as the sequence type of ``params`` (a list stays a list, as ``jax.grad`` keeps it)."""
    return list(items) if isinstance(params, list) else tuple(items)


def record(chain, params, x):
    """``(y, tape)``: the output and ``tape = (x_0, …, x_N)``, the activations reverse mode reads."""
    tape = [x]
    for layer, p in zip(chain.layers, params):
        tape.append(layer.apply(p, tape[-1]))
    return tape[-1], tuple(tape)


def push(chain, params, x, x_dot, params_dot=None, where=""):
    """``(y, y_dot)``: ``x_dot`` (or ``None``) and ``params_dot`` (a tuple with one entry per
    layer; ``None`` or ``{}`` entries are absent) pushed through the JVP rules. ``y_dot`` is
    ``None`` when every tangent is absent; layers before the first tangent are not differentiated."""
    if is_absent(params_dot):
        params_dot = (None,) * len(chain.layers)
    for i, (layer, p, p_dot) in enumerate(zip(chain.layers, params, params_dot), 1):
        y = layer.apply(p, x)
        x_dot = call_jvp(layer, p, x, y, x_dot, p_dot, f"{where}layer {i}")
        x = y
    return x, x_dot


def pull(chain, params, tape, y_bar, where=""):
    """``(params_bar, x_bar)``: ``y_bar`` pulled back through the VJP rules over ``tape`` (from
    :func:`record`); ``params_bar`` has the structure of ``params``, as ``jax.grad`` returns it."""
    layers = chain.layers
    params_bar = [None] * len(layers)
    for i in reversed(range(len(layers))):
        params_bar[i], y_bar = call_vjp(layers[i], params[i], tape[i], tape[i + 1], y_bar,
                                        f"{where}layer {i + 1}")
    return _like(params, params_bar), y_bar


def record_tangents(chain, params, x, x_dot, params_dot=None, where=""):
    """``(tape, tape_dot)``: ``(x_0, …, x_N)`` and their tangents ``(x_dot_0, …, x_dot_N)``
    (``None``: absent) for ``x_dot`` and ``params_dot`` (as :func:`push`)."""
    if is_absent(params_dot):
        params_dot = (None,) * len(chain.layers)
    tape, dots = [x], [x_dot]
    for i, (layer, p, p_dot) in enumerate(zip(chain.layers, params, params_dot), 1):
        y = layer.apply(p, tape[-1])
        dots.append(call_jvp(layer, p, tape[-1], y, dots[-1], p_dot, f"{where}layer {i}"))
        tape.append(y)
    return tuple(tape), tuple(dots)


def pull_tangents(chain, params, tape, tape_dot, params_dot, y_bar, y_bar_dot, where=""):
    """``(params_bar, x_bar, params_bar_dot, x_bar_dot)``: :func:`pull` of ``y_bar`` and its
    tangent along ``(params_dot, tape_dot, y_bar_dot)`` (forward-over-reverse), over a tape from
    :func:`record_tangents`. ``params_bar_dot`` is like params (zeros where no tangent reaches);
    ``x_bar_dot`` is ``None`` when none reaches x."""
    layers = chain.layers
    n = len(layers)
    if is_absent(params_dot):
        params_dot = (None,) * n
    params_bar, params_bar_dot = [None] * n, [None] * n
    for i in reversed(range(n)):
        layer, at = layers[i], f"{where}layer {i + 1}"
        params_bar_dot[i], x_bar_dot = call_vjp_jvp(layer, params[i], tape[i], tape[i + 1], y_bar, tape_dot[i],
                                                    params_dot[i], tape_dot[i + 1], y_bar_dot, at)
        if params_bar_dot[i] is None:
            params_bar_dot[i] = zeros_like_tree(params[i])
        params_bar[i], y_bar = call_vjp(layer, params[i], tape[i], tape[i + 1], y_bar, at)
        y_bar_dot = x_bar_dot
    return _like(params, params_bar), y_bar, _like(params, params_bar_dot), y_bar_dot
