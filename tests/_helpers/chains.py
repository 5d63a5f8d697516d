"""Random chains of the built-in layers, and layers that only declare costs, shared by the
planner, memory and executor tests."""
from __future__ import annotations

from hypothesis import strategies as st

import jacket
from jacket.operators import Structure

ELEMENTWISE = [e.name for e in jacket.registry.LAYERS if e.family == "elementwise"]
KINDS = [e.name for e in jacket.registry.LAYERS if e.name != "dense_nobias"]


def make_chain(in_width, spec):
    """A chain from ``spec = [(kind, width), ...]`` of registry names; ``width`` is a Dense
    layer's output width and ignored by the kinds that keep the width they are given."""
    layers, width = [], in_width
    for kind, out in spec:
        entry = jacket.registry.layer(kind)
        layers.append(entry.build(width, out))
        width = width if entry.keeps_width else out
    return jacket.Chain(layers, in_shape=in_width)


def random_chain(rng, length, kinds=KINDS, max_width=64):
    spec = [(rng.choice(kinds), rng.randint(1, max_width)) for _ in range(length)]
    return make_chain(rng.randint(1, max_width), spec)


class Declared(jacket.Layer):
    """A layer that only declares costs (no rules: it is planned, never run), so the planner can be
    tried on costs no built-in has: JVP and VJP costs that differ, Jacobians costly or free to
    materialise, diagonal-plus-rank-3 structure."""

    def __init__(self, n_in, n_out, jvp, vjp, jacobian, kind="matrix", rank=0):
        self.n_in, self.n_out, self.costs, self.kind, self.rank = n_in, n_out, (jvp, vjp, jacobian), kind, rank

    def input_shape(self):
        return (self.n_in,)

    def output_shape(self, in_shape):
        return (self.n_out,)

    def jvp_cost(self, in_shape):
        return self.costs[0]

    def vjp_cost(self, in_shape):
        return self.costs[1]

    def jacobian_cost(self, in_shape):
        return self.costs[2]

    def jacobian_structure(self, in_shape):
        return Structure(self.kind, self.n_out, self.n_in, self.rank)


def declared_chain(rng, length, max_width=20):
    layers, width = [], rng.randint(1, max_width)
    for _ in range(length):
        kind = rng.choice(["matrix", "diagonal", "dplr"])
        out = rng.randint(1, max_width) if kind == "matrix" else width
        rank = rng.randint(1, 3) if kind == "dplr" else 0
        size = width * out
        layers.append(Declared(width, out, rng.randint(0, 3 * size), rng.randint(0, 3 * size),
                               rng.randint(0, 5 * size), kind, rank))
        width = out
    return jacket.Chain(layers)


def chain_specs(max_length=6, max_width=8):
    """Hypothesis: (in_width, spec) over every built-in kind."""
    layer = st.tuples(st.sampled_from(KINDS), st.integers(1, max_width))
    return st.tuples(st.integers(1, max_width), st.lists(layer, min_size=1, max_size=max_length))
