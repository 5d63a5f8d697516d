"""Plan nodes: one small class per move, each knowing how to describe, format and run itself.

Factors are numbered as in the product ``J = J_N ⋯ J_1``: ``J_i`` is layer ``i``'s Jacobian, of
shape ``n_i × n_{i-1}`` (flattened sizes). A node computes the sub-product ``J_hi ⋯ J_lo``:

* :class:`Jac`  materialise one factor through its layer's structured ``jacobian``;
* :class:`Tan`  push tangent columns forward through the JVP rules of factors ``through``: the unit
  vectors, or the columns of an accumulated ``J_k ⋯ J_lo`` (its ``seed``);
* :class:`Adj`  pull cotangent rows back through the VJP rules: the unit vectors, or the rows of an
  accumulated ``J_hi ⋯ J_{k+1}`` (its ``seed``);
* :class:`Mul`  multiply two accumulated sub-products (``left`` later factors, ``right`` earlier),
  keeping their structure.

A new move is a new class here (with its cost in ``_model.py`` and, if it can be written, its
syntax in ``_orders.py``). ``run(ctx)`` is called by the executor with an :class:`Execution`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp

from ..core._tangents import call_jvp, call_vjp
from ..operators import LinearOperator, Matrix, Structure, multiply

__all__ = ["Node", "Jac", "Tan", "Adj", "Mul", "Execution"]


def span(a: int, b: int) -> str:
    """Factors a..b as written in tables: ``J2`` or ``J4..J2``."""
    return f"J{a}" if a == b else f"J{b}..J{a}"


def factor_list(a: int, b: int) -> str:
    """Factors a..b as written in order strings: ``J2``, ``J3 J2``, ``J5..J2``."""
    if a == b:
        return f"J{a}"
    if b - a == 1:
        return f"J{b} J{a}"
    return f"J{b}..J{a}"


@dataclass(frozen=True)
class Execution:
    """What a node needs to run: the chain's layers and shapes, params, the tape of one forward
    pass (one example), and ``sweep(rule, seeds)``, which maps a rule over seed vectors (a vmap,
    split over devices when a mesh is given). ``checkpoint``: the ADJ sweeps' checkpoint schedule
    (``jacket.checkpointing``; ``None``: read every activation from the tape)."""

    layers: tuple
    shapes: tuple
    params: tuple
    tape: tuple
    sweep: Callable
    checkpoint: int | str | tuple | None = None
    truth: object = None  # the checkpoints' unbatched run-time predicate (the executor's ``_truth``)

    def inner(self, chain, params, x, plan) -> "Execution":
        """The context of a composite's inner ``chain`` at its input ``x`` (one example), for its
        ``plan``: the chain's own tape, its sweeps whole (the bytes model counts them so)."""
        tape = [x]
        for layer, p in zip(chain.layers, params):
            tape.append(layer.apply(p, tape[-1]))
        return Execution(chain.layers, chain.shapes, params, tuple(tape), lambda rule, seeds: jax.vmap(rule)(seeds),
                         plan.checkpoint, self.truth)


@dataclass(frozen=True, kw_only=True)
class Node:
    """One step computing ``J_hi ⋯ J_lo`` (1-based, ``lo ≤ hi``): ``structure`` of the result,
    ``step_fma`` of this step alone, ``fma`` of the subtree."""

    op: ClassVar[str]
    colour: ClassVar[str] = "white"  # in plan pictures
    lo: int
    hi: int
    structure: Structure
    step_fma: int
    fma: int

    def children(self) -> tuple["Node", ...]:
        return ()

    def postorder(self):
        for child in self.children():
            yield from child.postorder()
        yield self

    def order(self) -> str:  # pragma: no cover - abstract
        """This subtree as an order string (``_orders.py`` parses it back to an equal tree)."""
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        """The ``factors`` column of a plan table."""
        raise NotImplementedError

    def run(self, ctx: Execution) -> LinearOperator:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Jac(Node):
    """Materialise factor ``lo``. For a block (``Residual``, ``Parallel``, a nested ``Chain``),
    ``plans`` holds the plan of each of its chains (its own optimal plan unless the order named
    one, ``named``), and ``step_fma`` is the merge (``I +``, a sum, a stack) alone."""

    op: ClassVar[str] = "JAC"
    colour: ClassVar[str] = "#d9e8f5"
    plans: tuple = ()
    named: bool = field(default=False, compare=False)
    label: str = field(default="", compare=False)  # the block's kind, for tables

    def order(self):
        if self.plans and self.named:
            return f"J{self.lo}[{'; '.join(p.order for p in self.plans)}]"
        return f"J{self.lo}"

    def describe(self):
        if self.plans:
            what = "the plan" if len(self.plans) == 1 else f"the {len(self.plans)} plans"
            return f"{span(self.lo, self.hi)} = {self.label} from {what} below"
        return span(self.lo, self.hi)

    def run(self, ctx):
        i = self.lo
        layer, params, x, y = ctx.layers[i - 1], ctx.params[i - 1], ctx.tape[i - 1], ctx.tape[i]
        if self.plans:  # a composite: its chains' plans run here, then its merge
            chains = layer.inner_chains(ctx.shapes[i - 1])
            ops = [plan.root.run(ctx.inner(chain, p, x, plan))
                   for chain, p, plan in zip(chains, layer.split_params(params), self.plans)]
            return layer.merge_jacobians(ctx.shapes[i - 1], ops)
        op = layer.jacobian(params, x, y)
        if isinstance(op, LinearOperator):
            if op.shape != self.structure.shape:
                raise ValueError(f"layer {i}: {layer!r}.jacobian returned an operator of shape {op.shape}, expected "
                                 f"{self.structure.shape} (size(out_shape), size(in_shape)) for one example")
            return op
        op = jnp.asarray(op)
        if op.size != self.structure.rows * self.structure.cols:
            raise ValueError(f"layer {i}: {layer!r}.jacobian returned an array of shape {op.shape}, expected "
                             f"{self.structure.shape} (size(out_shape), size(in_shape)) for one example")
        return Matrix(op.reshape(self.structure.shape))


@dataclass(frozen=True, kw_only=True)
class Sweep(Node):
    """TAN and ADJ: ``seed`` (an accumulated sub-product, or ``None`` for unit vectors) and the
    factors ``through = (a, b)`` whose rules run."""

    seed: Node | None = None
    through: tuple[int, int]

    def children(self):
        return () if self.seed is None else (self.seed,)

    def source(self) -> str:
        return "unit" if self.seed is None else span(self.seed.lo, self.seed.hi)


@dataclass(frozen=True, kw_only=True)
class Tan(Sweep):
    op: ClassVar[str] = "TAN"
    colour: ClassVar[str] = "#d8f0d2"

    def order(self):
        factors = factor_list(*self.through)
        return f"tan({factors})" if self.seed is None else f"tan({factors} | {self.seed.order()})"

    def describe(self):
        return f"{span(*self.through)} ← {self.source()} ({self.structure.cols} cols)"

    def run(self, ctx):
        a, b = self.through
        tape, shapes = ctx.tape, ctx.shapes
        if self.seed is None:
            columns = jnp.eye(self.structure.cols, dtype=tape[a - 1].dtype)  # one unit tangent per row
        else:
            columns = _materialise(self.seed.run(ctx).T)

        def push(t):
            t = t.reshape(shapes[a - 1])
            for i in range(a, b + 1):
                t = call_jvp(ctx.layers[i - 1], ctx.params[i - 1], tape[i - 1], tape[i], t, None, f"layer {i}")
            return t.reshape(-1)
        return Matrix.transpose_of(ctx.sweep(push, columns))  # one row per tangent, kept as made


@dataclass(frozen=True, kw_only=True)
class Adj(Sweep):
    op: ClassVar[str] = "ADJ"
    colour: ClassVar[str] = "#f8dccf"

    def order(self):
        factors = factor_list(*self.through)
        return f"adj({factors})" if self.seed is None else f"adj({self.seed.order()} | {factors})"

    def describe(self):
        return f"{self.source()} → {span(*self.through)} ({self.structure.rows} rows)"

    def run(self, ctx):
        a, b = self.through
        tape, shapes = ctx.tape, ctx.shapes
        if self.seed is None:
            rows = jnp.eye(self.structure.rows, dtype=tape[b].dtype)
        else:
            rows = _materialise(self.seed.run(ctx))

        if ctx.checkpoint is not None and b > a:
            return Matrix(_pull_checkpointed(ctx, a, b, rows))

        def pull(r):
            r = r.reshape(shapes[b])
            for i in range(b, a - 1, -1):
                # the parameter cotangents are unused here and removed by XLA
                r = call_vjp(ctx.layers[i - 1], ctx.params[i - 1], tape[i - 1], tape[i], r, f"layer {i}")[1]
            return r.reshape(-1)
        return Matrix(ctx.sweep(pull, rows))


def sweep_schedule(a: int, b: int, checkpoint) -> tuple:
    """The schedule (``jacket.checkpointing``) of a checkpointed ADJ sweep through factors
    ``a..b``, in the sweep's own layer indices (local layer ``i`` is factor ``a + i``)."""
    from ..checkpointing import schedule
    return schedule(b - a + 1, checkpoint)


def _pull_checkpointed(ctx, a, b, rows):
    """The rows pulled back through factors b..a over the sweep's schedule: the tape's states at
    its top-level boundaries are read, every recomputed segment runs forward again from its first
    state inside ``lax.cond`` (``jacket.checkpointing.pull_schedule``), and each layer's VJP rule
    is swept over the rows. The predicate is the executor's, unbatched."""
    from ..checkpointing import boundaries, pull_schedule
    nodes = sweep_schedule(a, b, ctx.checkpoint)
    kept = {i: ctx.tape[a - 1 + i] for i in boundaries(nodes)}

    def step(i, state):
        return ctx.layers[a - 1 + i].apply(ctx.params[a - 1 + i], state)

    def back(i, x, y, rows):
        layer, p, shape = ctx.layers[a - 1 + i], ctx.params[a - 1 + i], ctx.shapes[a + i]

        def pull(r):
            return call_vjp(layer, p, x, y, r.reshape(shape), f"layer {a + i}")[1].reshape(-1)
        return None, ctx.sweep(pull, rows)
    return pull_schedule(step, back, ctx.params, nodes, kept, rows, ctx.truth)[1]


@dataclass(frozen=True, kw_only=True)
class Mul(Node):
    op: ClassVar[str] = "MUL"
    colour: ClassVar[str] = "#eeeeee"
    left: Node
    right: Node

    def children(self):
        return (self.left, self.right)

    def order(self):
        return f"({self.left.order()} {self.right.order()})"

    def describe(self):
        return f"{span(self.left.lo, self.left.hi)} @ {span(self.right.lo, self.right.hi)}"

    def run(self, ctx):
        return multiply(self.left.run(ctx), self.right.run(ctx))[0]


def _materialise(op: LinearOperator):
    """The seed vectors as a row-major array. The barrier keeps XLA from folding a transpose
    (such as a Dense Jacobian's wᵀ) into the sweep's products, which on CPU turned them into
    slow non-library dots (benchmarks/README.md, "what the HLO showed")."""
    if isinstance(op, Matrix) and not op.transposed:
        return op.stored
    return jax.lax.optimization_barrier(op.to_dense())
