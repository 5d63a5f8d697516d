"""Checkpointing: which activations a reverse sweep keeps and which it recomputes.

* ``_schedules.py``: schedules as trees of segments (``None``, ``"sqrt"``, ``"two-level"``, a
  number of segments, interior boundaries);
* ``_binomial.py``: ``("binomial", B)``, the tree that recomputes the fewest layers holding at
  most B activations at once (a dynamic programme);
* ``_pull.py``: running one: the forward pass keeping a level's boundaries and the recursive
  pull-back, each recomputed segment inside ``jax.lax.cond``;
* ``_live.py``: what a schedule holds at each layer and what it recomputes, for the bytes and
  cost models of plans.

Used by ``compose`` (gradients, per-example gradients, curvature products) and ``planning``
(checkpointed ADJ sweeps of a plan).
"""
from ._binomial import binomial_cost, binomial_schedule
from ._live import recomputed, starts, states_live
from ._pull import forward_kept, pull_schedule, runtime_true
from ._schedules import boundaries, schedule, segments

__all__ = ["schedule", "segments", "boundaries", "forward_kept", "pull_schedule", "runtime_true",
           "binomial_schedule", "binomial_cost", "states_live", "recomputed", "starts"]
