"""Checkpointed reverse sweeps: keep the activations at a few boundaries, recompute the rest.

Reverse mode needs every activation ``x_0 … x_N`` of the forward pass. A checkpoint schedule
keeps fewer and recomputes the rest during the backward pass (Chen et al. 2016, "Training deep
nets with sublinear memory cost"). The recomputation repeats the forward pass's operations, so
the values are the full tape's: mostly bit for bit, but XLA:CPU may compile a recomputed layer
(a ``tanh``, a small matmul) in another context, vectorised or fused differently, and then a
value differs in its last few bits (measured on small float64 chains: a few units in the last
place; the tests compare at float64 tolerance).

* One level (``"sqrt"``, a number of segments ``k``, or the interior boundaries): the forward
  pass keeps only the ``k + 1`` boundary activations; the backward pass walks the segments from
  the last, recomputes one segment's activations from its boundary, pulls the cotangent back
  through it with the layers' VJP rules, and drops them again. Memory: ``k`` boundaries plus one
  segment, ``k + N / k`` activations, ``2√N`` for ``k = ⌈√N⌉`` ("sqrt"). Recomputation: one
  extra forward pass (each layer applied twice).
* Two levels (``"two-level"``): ``k₁ = ⌈N^(1/3)⌉`` outer segments. When the cotangent reaches
  an outer segment of length ``L``, the segment is recomputed forward from its boundary keeping
  only its own ``k₂ + 1`` inner boundaries (``k₂ = ⌈√L⌉``), then pulled back inner segment by
  inner segment, each recomputing its activations from its inner boundary. Memory:
  ``k₁ + k₂ + L / k₂`` activations, about ``3 N^(1/3)``. Recomputation: two extra forward
  passes (each layer applied three times). Measured (XLA's temporaries, 12 × (Dense(64, 64),
  Tanh) at batch 512, in activations): gradients 13 full tape, 10 "sqrt", 9 "two-level";
  Hessian-vector products 47, 23, 18.

* ``("binomial", B)``: the schedule that recomputes the fewest layers holding at most ``B``
  activations at once (``checkpointing/_binomial.py``).

A schedule is a tree (``jacket.checkpointing.schedule``): a segment ``(lo, hi, inner)`` covers
layers ``lo + 1 … hi`` and has its own sub-segments ``inner`` (``()`` for a single layer, pulled
back by its rule). ``pull_schedule`` pulls back through it recursively, for any number of levels
and for any per-layer forward step and pull-back step: activations and cotangents for gradients
(here), ``(x, x_dot)`` pairs and ``(y_bar, y_bar_dot)`` for Hessian-vector products
(``compose/_curvature.py``), cotangent rows for a plan's ADJ sweeps (``planning/_nodes.py``).

XLA would merge a recomputation with the forward pass it repeats (common-subexpression
elimination) and keep everything alive again. ``jax.lax.optimization_barrier`` does not stop it
on the CPU backend: measured here, the barriers are gone from the optimised HLO and so are the
recomputed products, for ``jax.checkpoint`` as for a hand-written segment. Each segment's
recomputation and pull-back therefore run inside ``jax.lax.cond`` on a predicate only known at
run time (a parameter's first entry is finite), with the same function in both branches: a
separate computation XLA cannot merge with the forward pass, and the same result either way.
Inner segments are ``cond``s nested in their outer segment's; XLA compiles both branches of
each, so a schedule costs compile time (about 2× the full tape's for two levels). No JAX
autodiff is used.
"""
from __future__ import annotations

from ..checkpointing import forward_kept, pull_schedule
from ..core._tangents import call_vjp

__all__ = ["forward_boundaries", "pull_checkpointed"]

def forward_boundaries(chain, params, x, bounds):
    """``(y, kept)``: the output and the activations at ``bounds`` only (``kept[b]`` = x_b)."""
    n = len(chain.layers)
    kept = forward_kept(lambda t, a: chain.layers[t].apply(params[t], a), 0, n, x, set(bounds) | {n})
    return kept[n], kept


def pull_checkpointed(chain, params, kept, nodes, y_bar):
    """``(params_bar, x_bar)``: ``y_bar`` pulled back through the layers' VJP rules over the
    schedule ``nodes`` (from :func:`schedule`; ``kept`` the activations at its top-level
    boundaries, from :func:`forward_boundaries`), each segment's activations recomputed from its
    boundary once the cotangent reaches it."""
    layers = chain.layers
    results, x_bar = pull_schedule(lambda t, a: layers[t].apply(params[t], a),
                                   lambda t, x, y, y_bar: call_vjp(layers[t], params[t], x, y, y_bar,
                                                                   f"layer {t + 1}"),
                                   params, nodes, kept, y_bar)
    params_bar = [results[t] for t in range(len(layers))]
    return (params_bar if isinstance(params, list) else tuple(params_bar)), x_bar
