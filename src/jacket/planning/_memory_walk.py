"""The walk of the bytes model (``_memory.py``, whose docstring says what is counted): the
buffers live at the worst moment of each step of a plan tree, in execution order. Everything it
knows about a layer comes from the layer's ``footprint`` (``core/_footprint.py``) and, for a
composite, from its ``inner_chains``."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..core import Footprint, size


def _temp(live, out_bytes) -> int:
    """Temporaries of a live set when the largest buffer that fits goes to the output allocation."""
    fits = [b for b in live if b <= out_bytes and not isinstance(b, _Pinned)]
    return sum(live) - (max(fits) if fits else 0)


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
        self.footprints = tuple(footprint(layer, tuple(shape)) for layer, shape in zip(plan.layers, plan.shapes))
        # the output's bytes on one device: with a mesh, XLA shards the result as the seeds
        self.out = self.item * -(-plan.dims[0] * plan.dims[-1] // max(plan.devices, 1))

    def fp(self, t) -> Footprint:
        """Factor t's footprint (1-based)."""
        return self.footprints[t - 1]

    def reads(self, t) -> set:
        """Tape indices (activations x_1 … x_N; x_0 is an argument) the rules of factor t read."""
        reads = self.fp(t).reads
        return {i for i, name in ((t - 1, "x"), (t, "y")) if name in reads and i >= 1}

    def size(self, node) -> int:
        """Bytes of a node's result; a factor whose Jacobian is a parameter (Dense's w) costs none."""
        if node.op == "JAC" and not node.plans and self.fp(node.lo).jacobian_is_argument:
            return 0
        return self.item * node.structure.size

    def tape(self, op, t, node=None, below=True) -> list:
        """Activations live at factor t of a sweep, those the rules read: in a TAN, computed just
        in time, those of factor t alone; in an ADJ, those of every factor at or below t (the
        forward pass ran first). A checkpointed ADJ ``node`` (``plan.checkpoint``) holds, of its
        own factors, what its schedule holds at t (:meth:`held`): the states it recomputes from,
        and the others the rules read (``below=False``: of its own factors only)."""
        if op == "TAN":
            return [self.item * self.dims[i] for i in sorted(self.reads(t))]
        keep = set()
        held = self.held(node, t) if node is not None else None
        if held is not None:  # checkpointed: what the schedule holds at t, of the sweep's own states
            a, states = node.through[0], held[0]
            read = set().union(*(self.reads(f) for f in range(node.through[0], node.through[1] + 1)))
            keep = {s for s in states if s >= 1 and (s in held[2] or s in read)}
            t = a - 1
        if below:
            keep |= set().union(set(), *(self.reads(i) for i in range(1, t + 1)))
        return [self.item * self.dims[i] for i in sorted(keep)]

    def work(self, t, op) -> tuple[int, int]:
        """Bytes factor t's rule holds in a sweep ``op``: per vector, and once."""
        return workspace(self.layers[t - 1], self.shapes[t - 1], self.item, op)

    def held(self, node, t):
        """For factor t of a checkpointed ADJ ``node``: ``(states, enclosing, starts)`` in the
        chain's indices, the states its schedule holds then, the recomputed segments ``(lo, hi)``
        around t (each a ``lax.cond``) and the states kept to recompute from; ``None`` unless
        checkpointed."""
        if node.op != "ADJ" or getattr(self.plan, "checkpoint", None) is None or node.through[1] == node.through[0]:
            return None
        from ..checkpointing import starts, states_live
        from ._nodes import sweep_schedule
        a, b = node.through
        nodes = sweep_schedule(a, b, self.plan.checkpoint)
        states, enclosing = states_live(nodes)[t - a]
        shift = a - 1
        return ({s + shift for s in states}, [(lo + shift, hi + shift) for lo, hi in enclosing],
                {s + shift for s in starts(nodes)})

    def worst(self, *lives):
        return max(lives, key=lambda live: (_temp(live, self.out), sum(live)))

    def record(self, node, live):
        from ._memory import StepMemory
        self.steps.append(StepMemory(node.op, node.describe(), sum(live), self.size(node)))

    def node(self, node, held, role="free"):
        run = {"MUL": self.mul, "TAN": self.sweep, "ADJ": self.sweep}.get(node.op, self.jac)
        return run(node, held, role)

    def jac(self, node, held, role):
        if node.plans:
            inner, before = [], []
            for p in node.plans:
                from ._memory import plan_memory  # a block's inner plans: the whole model, recursively
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
            return not node.plans and self.fp(node.lo).fusible
        if node.op == "MUL":
            kinds = (node.left.structure.kind, node.right.structure.kind)
            if "matrix" not in kinds or "diagonal" in kinds:
                return True
            # a rank-r update reads its dense operand twice: fused only when that operand is
            # itself a fused sweep (XLA recomputes the loop), as the HLO of elementwise chains shows
            dense = node.left if kinds[0] == "matrix" else node.right
            return dense.op in ("TAN", "ADJ") and self.fused(dense)
        a, b = node.through
        return all(self.fp(t).fusible for t in range(a, b + 1))

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
            return self.size(node) if not node.structure.dense_plain else 0
        if not self.fused(node):
            return 0
        own = 0
        if node.op in ("TAN", "ADJ"):
            a, b = node.through
            own = sum(self.work(t, node.op)[1] for t in range(a, b + 1))
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
        if getattr(self.plan, "chunk", None) and self.plan.chunk < c:
            return self.chunked(node, held, role, count, self.plan.chunk)
        item, d, tan = self.item, self.dims, node.op == "TAN"
        lives, segments = [], self.segments(node)
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
            # the last segment's input is an operand of the output; for a pinned node, its output.
            # Inside a recomputing conditional none goes to the output allocation, and the rows
            # entering it stay live beside the branch's own (the HLO's buffer assignment)
            kept = self.held(node, ts[-1])
            inside = bool(kept and kept[1])
            entering = [_Pinned(item * c * d[hi]) for _, hi in kept[1]] if inside else []
            pin_in, pin_out = inside or (role == "root" and k == last), inside or \
                (role == "root" and k == last - 1) or (role == "pinned" and k == last)
            io = [] if (k == 0 and free_input) else [_pin(item * c * n_in, pin_in)]
            if not (len(ts) == 1 and self.fp(ts[0]).view):
                io.append(_pin(item * c * n_out, pin_out))
            work = []
            for t in ts:
                each, once = self.work(t, node.op)
                work += [w for w in (c * each, once) if w]
            tape = [x for t in ts for x in self.tape(node.op, t)] if tan else self.tape(node.op, ts[-1], node)
            lives.append(list(held) + (extra if k == 0 else []) + io + work + tape + entering)
        live = self.worst(*lives)
        self.record(node, live)
        return live

    def segments(self, node):
        """A sweep's factors as its rules run, in runs XLA fuses into one loop: ``[[(t, fusible)]]``."""
        a, b = node.through
        segments = []
        for t in (range(a, b + 1) if node.op == "TAN" else range(b, a - 1, -1)):
            fusible = self.fp(t).fusible
            if segments and fusible and segments[-1][-1][1]:
                segments[-1].append((t, True))
            else:
                segments.append([(t, fusible)])
        return segments

    def chunked(self, node, held, role, count, k):
        """A sweep as ``lax.map(rule, seeds, batch_size=k)``: a loop over ``count // k`` batches
        of ``k``, then one vmapped batch of the ``r`` left over, concatenated (module docstring)."""
        (a, b), item, d, tan = node.through, self.item, self.dims, node.op == "TAN"
        full, r = count // k * k, count % k
        n_in, n_out = (d[a - 1], d[b]) if tan else (d[b], d[a - 1])
        lives, seeds = [], []
        if node.seed is None:  # the unit seeds: an identity made for the loop (its batches, fused)
            seeds = [item * full * n_in] * (2 if k == 1 else 1)  # batches of one: copied for the loop
        else:
            made = self.size(node.seed)
            lives.append(self.node(node.seed, held, "free"))
            # the seeds as the map reads them: a Dense weight as stored is read in place (TAN), a
            # product is written in the layout read; a sweep's result or a structured seed read
            # transposed is densified, a remainder sliced: one copy, which computes a fused seed
            dense = r or k == 1 or (not made and not tan) or (made and (made != item * count * n_in or (
                _copied(node) and node.seed.op != "MUL")))
            seeds = [x for x in (0 if dense and self.fused(node.seed) else made,
                                 item * (full if r else count) * n_in if dense else 0) if x]
        # the map's stacked output: the sweep's result when k divides count, an operand of the
        # output's transpose (TAN) or concatenation (a remainder) at the root
        stack = _pin(item * full * n_out, role == "pinned" or (role == "root" and (tan or r)))
        # what the loop body reads is computed before the loop: every activation and derivative
        body = [w for t in range(a, b + 1) for w in
                [self.work(t, node.op)[1]] + self.tape("TAN", t) if w]
        if not tan and getattr(self.plan, "checkpoint", None) is not None and b > a:
            # checkpointed: a loop per layer, reading what the schedule holds and the derivatives
            # of the recomputed segment around it
            def reads(t):
                enclosing = self.held(node, t)[1]
                lo, hi = enclosing[-1] if enclosing else (t - 1, t)
                return [w for f in range(lo + 1, hi + 1) for w in
                        [self.work(f, node.op)[1]] if w]
            body = max((reads(t) + self.tape("ADJ", t, node, below=False) for t in range(a, b + 1)), key=sum)
        for rows, phase in ((k, seeds + [stack]), (r, [stack])):
            for j, seg in enumerate(self.segments(node) if rows else ()):
                ts = [t for t, _ in seg]
                io = [] if (j == 0 and seg[0][1]) else [item * rows * (d[ts[0] - 1] if tan else d[ts[0]])]
                if not (len(ts) == 1 and self.fp(ts[0]).view):
                    io.append(item * rows * (d[ts[-1]] if tan else d[ts[-1] - 1]))
                work = [rows * w for t in ts for w in [self.work(t, node.op)[0]] if w]
                lives.append(list(held) + phase + io + work + body)
        if r:  # the concatenation: the stack, the remainder's output and the result (at the root, the output)
            lives.append(list(held) + [stack, item * r * n_out] + [_pin(item * count * n_out, role == "pinned")] *
                         (role != "root"))
        live = self.worst(*lives)
        self.record(node, live)
        return live


def _copied(node) -> bool:
    """Whether a seeded sweep copies its seed: TAN reads the seed's transpose (free for a TAN
    result, stored transposed), ADJ its rows (free unless the seed is a TAN result)."""
    return (node.seed.op != "TAN") if node.op == "TAN" else (node.seed.op == "TAN")


def footprint(layer, in_shape) -> Footprint:
    """A layer's footprint; a composite's is its merge's (fusible only if it has no chains of its
    own to run, reading its input), its chains' own buffers counted by :func:`workspace`."""
    if layer.inner_chains(in_shape):
        return _composite_footprint(layer, in_shape)
    return layer.footprint(in_shape)


@lru_cache(maxsize=1024)
def _composite_footprint(layer, in_shape) -> Footprint:
    linear = all(is_linear(chain) for chain in layer.inner_chains(in_shape))
    return Footprint(reads=() if linear else {"x"})


def is_linear(chain) -> bool:
    """Whether every layer of ``chain`` (composites looked into) reads no activation."""
    return all(footprint(layer, tuple(shape)).linear for layer, shape in zip(chain.layers, chain.shapes))


def workspace(layer, shape, item, op="TAN") -> tuple[int, int]:
    """Bytes a layer's JVP/VJP rule materialises beyond its vmapped input and output, per seed
    vector and once (shared by all vectors): its footprint's; for a composite, its chains'
    sweeps run inside the rule and the merge adds the others' outputs."""
    shape = tuple(shape)
    chains = layer.inner_chains(shape)
    if chains:
        each = sum(_chain_workspace(ch, item, op) for ch in chains)
        return each + (len(chains) - 1) * item * size(layer.output_shape(shape)), 0
    per, once = layer.footprint(shape).workspace(op)
    return item * per, item * once


def _chain_workspace(chain, item, op="TAN") -> int:
    """Per-vector bytes of one vector through an inner chain beyond its input (live already) and
    its output (the block's): the largest intermediate vector and the rule's own work."""
    dims, k = chain.dims, len(chain.layers)
    return max((item * dims[t] if t < k else 0) + workspace(layer, shape, item, op)[0]
               for t, (layer, shape) in enumerate(zip(chain.layers, chain.shapes), 1))
