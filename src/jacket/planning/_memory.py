"""A memory model in bytes for plans: what XLA allocates for a compiled
``chain.jacobian(params, x, plan)`` (``compiled.memory_analysis()``: arguments, output, temporaries).

The plan tree is walked in execution order, keeping the buffers live at the worst moment of
each step (bytes; ``c`` = seed vectors per device, ``ceil(count / devices)``):

* TAN/ADJ through factors ``a..b``: per factor ``t`` the vmapped input and output, ``c·n_{t-1}``
  and ``c·n_t``, but a run of elementwise/normalisation factors is one XLA loop fusion (input and
  output of the run only), which also swallows a unit or fused seed; plus what the rule
  materialises (``_workspace``: the derivative ``n_t`` once for an elementwise layer, layout
  copies for a convolution's VJP, q/k/v and scores for attention, a block's inner intermediates)
  and the activations the rules read (a TAN computes them just in time, an ADJ after the whole
  forward pass). A seed that must be transposed is copied: both live at the first factor;
* MUL: both operands and the result (``Structure.size`` each), the first child's result held
  while the second runs (the cheaper order, as XLA's scheduler); a product by a diagonal, or a
  rank-r update of a fused sweep's result, fuses with that operand's loop, which then reads only
  the vectors of the structured factors under it;
* JAC: nothing for a Dense factor (its weight is an argument), the structure otherwise; a block,
  each inner plan's own peak (``plan_memory``) beside the results before it, then the merge.

XLA reuses the output allocation for one temporary at a time that dies before the result is
written (a sweep ping-pongs between it and one temporary): at every moment the largest live
buffer that fits and is not an operand of the last step (``_Pinned``) is not a temporary.
``jax.jit`` drops arguments the Jacobian never reads (a bias followed only by linear layers).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["MemoryEstimate", "StepMemory", "plan_memory"]


@dataclass(frozen=True)
class StepMemory:
    """One step of the plan (postorder, as ``Plan.steps``): ``live_bytes`` at its worst moment
    (its own buffers, what earlier steps left live for later ones, and the tape) and
    ``result_bytes`` of what it produces."""

    op: str
    factors: str
    live_bytes: int
    result_bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one compiled ``chain.jacobian`` call (per device when ``devices > 1``).

    ``result_bytes``: the dense Jacobian (XLA's output size; with a mesh, one device's shard);
    ``argument_bytes``: the params the Jacobian reads and the input x (XLA's argument size without
    a mesh); ``params_bytes``: all params; ``tape_bytes``: the activations ``x_1 … x_N``;
    ``temp_bytes``: the predicted peak of XLA's temporaries; ``peak_live_bytes``: every buffer
    live at that moment, before the output allocation's reuse is taken off; ``steps``: per step.
    """

    result_bytes: int
    argument_bytes: int
    params_bytes: int
    tape_bytes: int
    temp_bytes: int
    peak_live_bytes: int
    steps: tuple[StepMemory, ...]
    devices: int = 1
    dtype: str = "float32"

    @property
    def total_bytes(self) -> int:
        """Arguments, result and temporaries: what one call needs on the device."""
        return self.argument_bytes + self.result_bytes + self.temp_bytes


def plan_memory(plan, dtype="float32") -> MemoryEstimate:
    """The :class:`MemoryEstimate` of ``plan`` for inputs and params of ``dtype`` (cached per plan)."""
    return _plan_memory(plan, str(np.dtype(dtype)))


@lru_cache(maxsize=256)
def _plan_memory(plan, dtype: str) -> MemoryEstimate:
    item = int(np.dtype(dtype).itemsize)
    walk = _Walk(plan, dtype)
    live = walk.node(plan.root, [], "root")
    out = walk.out
    params = item * sum(_params_floats(layer, tuple(shape)) for layer, shape in zip(plan.layers, plan.shapes))
    unused, linear = _unused_floats(plan.layers, plan.shapes)
    used = params - item * unused  # jax.jit drops the arguments the Jacobian never reads
    return MemoryEstimate(result_bytes=out, argument_bytes=used + (0 if linear else item * plan.dims[0]),
                          params_bytes=params, tape_bytes=item * sum(plan.dims[1:]), temp_bytes=_temp(live, out),
                          peak_live_bytes=sum(live), steps=tuple(walk.steps), devices=plan.devices, dtype=dtype)


def _temp(live, out_bytes) -> int:
    """Temporaries of a live set when the largest buffer that fits goes to the output allocation."""
    fits = [b for b in live if b <= out_bytes and not isinstance(b, _Pinned)]
    return sum(live) - (max(fits) if fits else 0)


@lru_cache(maxsize=4096)
def _params_floats(layer, shape) -> int:
    """Floats in a layer's params, from its abstract init (no arrays are made)."""
    import jax
    if _name(layer) == "Dense":
        return layer.in_features * layer.out_features + (layer.out_features if layer.bias else 0)
    if _name(layer) in ELEMENTWISE + ("Reshape", "Flatten", "MaxPool2D", "AvgPool2D"):
        return 0
    try:
        tree = jax.eval_shape(layer.init, jax.random.PRNGKey(0))
    except Exception:  # a layer that cannot init unbound: bind it to its input shape first
        tree = jax.eval_shape(layer.bind(tuple(shape)).init, jax.random.PRNGKey(0))
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _unused_floats(layers, shapes) -> tuple[int, bool]:
    """Floats of params the Jacobian never reads, and whether the whole chain is linear (then x
    is unread too): a Dense bias followed only by linear layers (Dense, reshapes) shifts the
    output alone. Blocks are looked into; a Residual or a sum keeps the linearity after it."""
    unused = 0
    for layer, shape in zip(reversed(layers), reversed(shapes)):
        name = type(layer).__name__
        chains = getattr(layer, "chains", None)
        if name == "Dense":
            unused += layer.out_features if layer.bias else 0
        elif name in ("Reshape", "Flatten"):
            pass
        elif (chains and name in ("Residual", "Parallel")) or hasattr(layer, "shapes"):
            inner = [_unused_floats(c.layers, c.shapes) for c in
                     (layer._bound(tuple(shape)) if chains else (layer,))]
            unused += sum(u for u, _ in inner)
            if not all(lin for _, lin in inner):
                return unused, False
        else:
            return unused, False
    return unused, True


class _Pinned(int):
    """Bytes of a buffer live while the result is written (an operand of the last step): XLA
    cannot place it in the output allocation."""


def _pin(size, pinned):
    return _Pinned(size) if pinned and size else size


class _Walk:
    """Walks a plan tree; ``node(n, held, role)`` returns the buffers (bytes) live at the worst
    moment of computing ``n`` while ``held`` stays live, and records one :class:`StepMemory` per
    step. ``role``: "root" (n's result is the output), "pinned" (it is an operand of the step
    writing the output) or "free"."""

    def __init__(self, plan, dtype):
        self.plan, self.dtype, self.item, self.steps = plan, dtype, int(np.dtype(dtype).itemsize), []
        self.dims, self.layers, self.shapes = plan.dims, plan.layers, plan.shapes
        # the output's bytes on one device: with a mesh, XLA shards the result as the seeds
        self.out = self.item * -(-plan.dims[0] * plan.dims[-1] // max(plan.devices, 1))

    def size(self, node) -> int:
        """Bytes of a node's result; a Dense factor's Jacobian is its weight, an argument."""
        if node.op == "JAC" and not node.plans and _name(self.layers[node.lo - 1]) == "Dense":
            return 0
        return self.item * node.structure.size

    def tape(self, op, t) -> list:
        """Activations live at factor t of a sweep, those the rules read: in a TAN, computed just
        in time, ``x_t`` alone; in an ADJ, every one at or below t (the forward pass ran first)."""
        need = [i for i in (range(t, t + 1) if op == "TAN" else range(1, t + 1)) if _name(self.layers[i - 1]) not in LINEAR]
        return [self.item * self.dims[i] for i in need]

    def worst(self, *lives):
        return max(lives, key=lambda live: (_temp(live, self.out), sum(live)))

    def record(self, node, live):
        self.steps.append(StepMemory(node.op, node.describe(), sum(live), self.size(node)))

    def node(self, node, held, role="free"):
        run = {"MUL": self.mul, "TAN": self.sweep, "ADJ": self.sweep}.get(node.op, self.jac)
        return run(node, held, role)

    def jac(self, node, held, role):
        if node.plans:
            inner, before = [], []
            for p in node.plans:
                est = plan_memory(p, self.dtype)
                inner.append(list(held) + before + [est.temp_bytes, est.result_bytes])
                before.append(_pin(est.result_bytes, role == "root"))
            live = self.worst(*inner, list(held) + before + [_pin(self.size(node), role == "pinned")])
        else:
            live = list(held) + [b for b in [_pin(self.size(node), role == "pinned")] if b]
        self.record(node, live)
        return live

    def fused(self, node) -> bool:
        """Whether XLA fuses ``node``'s step into its consumer: a JAC of a structured factor, a
        sweep whose rules are all elementwise or normalisations, a product with a structured
        operand (scaling and rank-r updates are loops, not dots)."""
        if node.op == "JAC":
            return not node.plans and _name(self.layers[node.lo - 1]) in FUSIBLE
        if node.op == "MUL":
            kinds = (node.left.structure.kind, node.right.structure.kind)
            if "matrix" not in kinds or "diagonal" in kinds:
                return True
            # a rank-r update reads its dense operand twice: fused only when that operand is
            # itself a fused sweep (XLA recomputes the loop), as the HLO of elementwise chains shows
            dense = node.left if kinds[0] == "matrix" else node.right
            return dense.op in ("TAN", "ADJ") and self.fused(dense)
        a, b = node.through
        return all((_name(self.layers[t - 1]) in FUSIBLE) for t in range(a, b + 1))

    def operand(self, node, child, pinned) -> list:
        """``child``'s result as an operand of ``node``: none when it is an argument (a Dense
        weight); when both fuse into one loop, the vectors that loop reads instead."""
        size = self.size(child)
        if not size:
            return []
        if self.fused(node) and (self.fused(child) or not child.children()):
            return [b for b in [self.vectors(child)] if b]
        return [_pin(size, pinned)]

    def vectors(self, node) -> int:
        """Bytes of the vectors a fused subtree reads (structured factors, derivatives)."""
        if node.op == "JAC":
            return self.size(node) if node.structure.kind != "matrix" else 0
        if not self.fused(node):
            return 0
        own = 0
        if node.op in ("TAN", "ADJ"):
            a, b = node.through
            own = sum(_workspace(self.layers[t - 1], self.shapes[t - 1], self.item, node.op)[1] for t in range(a, b + 1))
        return own + sum(self.vectors(child) for child in node.children())

    def mul(self, node, held, role):
        """Each child is walked once (linear in the tree); held beside the other, its live set
        grows by the other's result, in the cheaper of the two orders."""
        left, right = node.left, node.right
        pinned = role == "root"
        lives, marks = {}, [len(self.steps)]
        for child in (left, right):  # an operand of the output's step, unless fused into it
            lives[child] = self.node(child, held, "pinned" if pinned and self.operand(node, child, True) else "free")
            marks.append(len(self.steps))
        first_left = self.worst(lives[left], lives[right] + self.operand(node, left, pinned))
        first_right = self.worst(lives[right], lives[left] + self.operand(node, right, pinned))
        children = min(first_left, first_right, key=lambda live: (_temp(live, self.out), sum(live)))
        if children is first_right:  # record the steps in the order they run
            steps = self.steps[marks[0]:]
            self.steps[marks[0]:] = steps[marks[1] - marks[0]:] + steps[:marks[1] - marks[0]]
        own = self.operand(node, left, pinned) + self.operand(node, right, pinned)
        live = self.worst(children, list(held) + own + [b for b in [_pin(self.size(node), role == "pinned")] if b])
        self.record(node, live)
        return live

    def sweep(self, node, held, role):
        a, b = node.through
        count = node.structure.cols if node.op == "TAN" else node.structure.rows
        c = -(-count // max(self.plan.devices, 1))
        if getattr(self.plan, "chunk", None):
            c = min(c, self.plan.chunk)  # a chunked sweep holds one batch of seeds at a time
        item, d, tan = self.item, self.dims, node.op == "TAN"
        lives = []
        # segments: a run of fusible factors is one loop; every other factor is its own step
        segments = []
        for t in (range(a, b + 1) if tan else range(b, a - 1, -1)):
            if segments and (_name(self.layers[t - 1]) in FUSIBLE) and segments[-1][-1][1]:
                segments[-1].append((t, True))
            else:
                segments.append([(t, (_name(self.layers[t - 1]) in FUSIBLE))])
        first_fused = segments[0][0][1]
        seed_size = 0 if node.seed is None else self.size(node.seed)
        free_input = first_fused and (node.seed is None or self.fused(node.seed) or not seed_size)
        extra = [self.vectors(node.seed)] if node.seed is not None and free_input and self.fused(node.seed) else []
        if node.seed is not None:
            pinned = role == "root" and len(segments) == 1 and not free_input
            lives.append(self.node(node.seed, held, "pinned" if pinned else "free"))
            if _copied(node) and not first_fused and seed_size:
                extra = [seed_size]  # the seed as made, beside its transposed copy
        last = len(segments) - 1
        for k, seg in enumerate(segments):
            ts = [t for t, _ in seg]
            n_in = d[ts[0] - 1] if tan else d[ts[0]]
            n_out = d[ts[-1]] if tan else d[ts[-1] - 1]
            # the last segment's input is an operand of the output; for a pinned node, its output
            pin_in, pin_out = role == "root" and k == last, (role == "root" and k == last - 1) or \
                (role == "pinned" and k == last)
            io = [] if (k == 0 and free_input) else [_pin(item * c * n_in, pin_in)]
            if not (len(ts) == 1 and _name(self.layers[ts[0] - 1]) in ("Reshape", "Flatten")):
                io.append(_pin(item * c * n_out, pin_out))
            work = []
            for t in ts:
                each, once = _workspace(self.layers[t - 1], self.shapes[t - 1], item, node.op)
                work += [w for w in (c * each, once) if w]
            tape = [x for t in ts for x in self.tape(node.op, t)] if tan else self.tape(node.op, ts[-1])
            lives.append(list(held) + (extra if k == 0 else []) + io + work + tape)
        live = self.worst(*lives)
        self.record(node, live)
        return live


def _copied(node) -> bool:
    """Whether a seeded sweep copies its seed: TAN reads the seed's transpose (free for a TAN
    result, stored transposed), ADJ its rows (free unless the seed is a TAN result)."""
    return (node.seed.op != "TAN") if node.op == "TAN" else (node.seed.op == "TAN")


ELEMENTWISE = ("Tanh", "Sigmoid", "ReLU", "Softplus", "GELU")
FUSIBLE = ELEMENTWISE + ("LayerNorm", "Softmax", "LogSoftmax")  # loops XLA fuses: no dot, no window
LINEAR = ("Dense", "Reshape", "Flatten", "Conv1D", "Conv2D", "AvgPool2D")  # rules read no activations


def _name(layer) -> str:
    return type(layer).__name__


def _workspace(layer, shape, item, op="TAN") -> tuple[int, int]:
    """Bytes a layer's JVP/VJP rule materialises beyond its vmapped input and output: per seed
    vector, and once (shared by all vectors). Read off XLA's CPU buffer assignment: a Dense,
    convolution or pooling JVP writes its output only; their VJPs (``op="ADJ"``) transpose the
    layout of both sides (convolution) or pad a selection to the input's size (max pooling); a
    fusible rule keeps one vector (its derivative, or statistics) for all seeds."""
    name, n, shape = _name(layer), int(np.prod(shape)), tuple(shape)
    chains = getattr(layer, "chains", None)
    if chains:  # a block: its chains' sweeps run inside the rule, the merge adds the others' outputs
        bound = layer._bound(shape)
        each = sum(_chain_workspace(ch, item, op) for ch in bound)
        return each + (len(bound) - 1) * item * int(np.prod(layer.output_shape(shape))), 0
    if hasattr(layer, "layers") and hasattr(layer, "shapes"):  # a nested Chain
        return _chain_workspace(layer, item, op), 0
    if name in ("Conv1D", "Conv2D", "MaxPool2D", "AvgPool2D") and op == "ADJ":
        return item * (n + (int(np.prod(layer.output_shape(shape))) if "Conv" in name else 0)), 0
    if name in LINEAR + ("MaxPool2D",):
        return 0, 0
    if name in FUSIBLE:
        return 0, item * n
    if name == "MultiHeadSelfAttention":  # q, k, v, their tangents, the scores: fitted on CPU
        return 6 * item * n, item * n
    return 2 * item * n, item * n  # other layers (embeddings, user layers): a guess


def _chain_workspace(chain, item, op="TAN") -> int:
    """Per-vector bytes of one vector through an inner chain beyond its input (live already) and
    its output (the block's): the largest intermediate vector and the rule's own work."""
    dims, k = chain.dims, len(chain.layers)
    return max((item * dims[t] if t < k else 0) + _workspace(layer, shape, item, op)[0]
               for t, (layer, shape) in enumerate(zip(chain.layers, chain.shapes), 1))
