"""``jacket demo``: the library in one screen.

On a default chain (a 784-256-256-10 tanh MLP with softmax cross-entropy) it runs backpropagation,
forward accumulation and the Jacobian in several orders, checks every result against JAX's own
autodiff, times each one (jitted, median) and prints the model cost next to it, then prints the
optimal plan's table, what the planner finds on a bottleneck chain, the Jacobian of a chain
on a token sequence (T, d) against jax.jacfwd, and the plans of architectures with blocks (a
residual MLP, a transformer block, a residual CNN: jacket.examples.architectures), their
Jacobians checked against jax.jacfwd and the transformer's nested plan table.
"""
from __future__ import annotations

HELP = "show forward/reverse accumulation, backprop and the optimal plan, checked against JAX"


def add_arguments(parser):
    parser.add_argument("--widths", default="784,256,256,10",
                        help="layer widths of the tanh MLP (default: 784,256,256,10)")
    parser.add_argument("--batch", type=int, default=128, help="batch size for the gradient (default 128)")
    parser.add_argument("--seed", type=int, default=0)


def _rel(a, b):
    import jax
    import jax.numpy as jnp
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(leaves_a, leaves_b))
    den = max(float(jnp.max(jnp.abs(v))) for v in leaves_b)
    return num / max(den, 1e-30)


def run(args) -> int:
    import jax
    import jax.numpy as jnp

    import jacket
    from jacket._table import format_table
    from jacket_bench.timing import alternate, device_info

    widths = [int(w) for w in args.widths.split(",")]
    chain = jacket.mlp(widths, activation="tanh")
    loss = jacket.SoftmaxCrossEntropy()
    k_params, k_x, k_y, k_v = jax.random.split(jax.random.key(args.seed), 4)
    params = chain.init(k_params)
    x = jax.random.normal(k_x, (args.batch, widths[0]), jnp.float32)
    labels = jax.random.randint(k_y, (args.batch,), 0, widths[-1])
    x0 = x[0]
    info = device_info()
    print(f"jacket {jacket.__version__} on {info['platform']} ({info['device_kind']}, {info['cpu_count']} cores), "
          f"jax {jax.__version__}, float32")
    print(f"chain: {chain}\nloss:  {loss!r}, batch {args.batch}\n")

    def jax_loss(p, xb, yb):
        return loss.apply(chain(p, xb), yb)
    direction = jax.tree_util.tree_map(lambda a: jax.random.normal(k_v, a.shape, a.dtype), params)

    def planned(order):
        return jacket.plan(chain, 1, order=order)(params, x0)

    candidates = {
        "reverse: value_and_grad (backprop)": (
            jax.jit(jacket.value_and_grad(chain, loss)), (params, x, labels),
            jax.jit(jax.value_and_grad(jax_loss)), "jax.value_and_grad", None),
        "forward: jvp along params direction": (
            jax.jit(lambda p, v: chain.jvp(p, x, None, None, v)), (params, direction),
            jax.jit(lambda p, v: jax.jvp(lambda q: chain(q, x), (p,), (v,))[1]), "jax.jvp", None),
        "Jacobian dy/dx, forward (tangents)": (
            jax.jit(jacket.jacobian(chain, 1, order="forward")), (params, x0),
            jax.jit(jax.jacfwd(chain, argnums=1)), "jax.jacfwd", planned("forward")),
        "Jacobian dy/dx, reverse (adjoints)": (
            jax.jit(jacket.jacobian(chain, 1, order="reverse")), (params, x0),
            jax.jit(jax.jacrev(chain, argnums=1)), "jax.jacrev", planned("reverse")),
        "Jacobian dy/dx, optimal plan": (
            jax.jit(jacket.jacobian(chain, 1, order="optimal")), (params, x0),
            jax.jit(jax.jacrev(chain, argnums=1)), "jax.jacrev", planned("optimal")),
    }
    rows = []
    for name, (ours, ours_args, ref, ref_name, plan) in candidates.items():
        error = _rel(ours(*ours_args), ref(*ours_args))
        timed = alternate({"jacket": ours, "jax": ref}, ours_args, repeats=7, baseline="jax")
        rows.append((name, ref_name, error, plan.fma if plan else "-", timed["median_s"]["jacket"] * 1e3,
                     timed["median_s"]["jax"] * 1e3, timed["ratio"]["jacket"]))
    print(format_table(["jacket", "checked against", "max rel diff", "model fma", "jacket ms", "JAX ms",
                        "time ratio"], rows))
    fwd, rev = planned("forward"), planned("reverse")
    print(f"\nThe output has {widths[-1]} entries and the input {widths[0]}: reverse needs {widths[-1]} adjoint "
          f"sweeps, forward {widths[0]} tangent sweeps, a model ratio of {fwd.fma / rev.fma:.1f}x.")
    print("(jitted, medians of 7 alternating rounds; time ratio = median of jacket/JAX within a round)\n")
    print(planned("optimal"))
    bottleneck = jacket.mlp([1024, 1024, 16, 1024, 1024], activation="tanh")
    plan = jacket.plan(bottleneck, 1)(None, jax.ShapeDtypeStruct(bottleneck.in_shape, jnp.float32))
    print(f"\nOn a bottleneck chain {bottleneck.dims}, neither mode is good:\n")
    print(plan)
    # shaped inputs: a token sequence (T, d) through last-axis layers; the Jacobian is out + in shape
    seq = jacket.Chain([jacket.Dense(16, 64), jacket.GELU(), jacket.Dense(64, 16), jacket.LayerNorm(16)],
                       in_shape=(8, 16))
    seq_params = seq.init(k_params)
    tokens = jax.random.normal(k_x, seq.in_shape, jnp.float32)
    seq_jac = jax.jit(jacket.jacobian(seq, 1))(seq_params, tokens)
    seq_ref = jax.jit(jax.jacfwd(seq, argnums=1))(seq_params, tokens)
    seq_error = _rel(seq_jac, seq_ref)
    print(f"\nShaped inputs: {seq}\n  Jacobian shape {tuple(seq_jac.shape)} (out_shape + in_shape, as "
          f"jax.jacfwd), optimal order {jacket.plan(seq, 1)(seq_params, tokens).order}, max rel diff to "
          f"jax.jacfwd {seq_error:.2e}")
    arch_errors = _architectures(k_params, k_x)
    memory_error = _memory(k_params, k_x)
    worst = max([r[2] for r in rows] + [seq_error] + arch_errors + [memory_error])
    ok = worst < 1e-3
    print(f"\nall results agree with JAX: {'yes' if ok else 'NO'} (largest relative difference {worst:.2e})")
    print("\nnext: jacket plan 784,1024,16,1024,784 --compare   (any chain's cost table)\n"
          "      jacket plan --model transformer                (a transformer block's nested plan table)\n"
          "      jacket plan 1024,8192,8192,1024 --memory-limit 380MB   (a plan that fits: chunks, checkpoints)\n"
          "      jacket check                                   (every built-in rule against JAX and finite differences)\n"
          "      jacket train mlp | cnn | transformer           (backprop on the digits, or sorting strings; optax)\n"
          "      jacket bench                                   (jacket against jax.jacfwd / jacrev / grad, JSON + PNG)")
    return 0 if ok else 1


def _architectures(k_params, k_x) -> list:
    """Blocks: each architecture's optimal plan against the two modes, its Jacobian against
    jax.jacfwd (small sizes, so the check is quick), then the transformer block's nested table.
    Returns the relative differences."""
    import jax
    import jax.numpy as jnp

    import jacket
    from jacket._table import format_table
    from jacket.examples import architectures as arch

    cases = [("residual MLP", arch.residual_mlp(64, 64, 2, 10)), ("transformer block", arch.transformer_block(8, 32, 4)),
             ("residual CNN", arch.cnn(8))]
    rows, errors = [], []
    for name, chain in cases:
        params = chain.init(k_params)
        x = jax.random.normal(k_x, chain.in_shape, jnp.float32)
        jac = jax.jit(jacket.jacobian(chain, 1))(params, x)
        errors.append(_rel(jac, jax.jit(jax.jacfwd(chain, argnums=1))(params, x)))
        plan, fwd, rev = (jacket.plan(chain, 1, order=o)(params, x) for o in ("optimal", "forward", "reverse"))
        rows.append((name, "×".join(map(str, chain.in_shape)) + " -> " + "×".join(map(str, chain.out_shape)),
                     plan.order, fwd.fma, rev.fma, plan.fma, min(fwd.fma, rev.fma) / plan.fma, errors[-1]))
    print("\nArchitectures with blocks (Residual, Chain inside Chain): every block is one factor whose "
          "Jacobian, when materialised, has its own optimal plan\n")
    print(format_table(["model", "shapes", "optimal order", "forward fma", "reverse fma", "optimal fma",
                        "speedup vs best mode", "max rel diff to jax.jacfwd"], rows))
    block = arch.transformer_block()
    print(f"\nThe transformer block at T = {block.in_shape[0]}, d = {block.in_shape[1]}, 4 heads: the Jacobian "
          f"of the MLP residual is accumulated by its own plan (rows 1.x), then the attention residual's "
          f"adjoint rule pulls all its rows back at once\n")
    print(jacket.plan(block, 1)(None, jax.ShapeDtypeStruct(block.in_shape, jnp.float32)))
    return errors


def _memory(k_params, k_x) -> float:
    """Per-example Jacobians of a deep classifier planned under memory limits: the bytes model
    against XLA's compiled bytes, and the result against jax.jacfwd."""
    import jax
    import jax.numpy as jnp

    import jacket
    from jacket._table import format_table
    from jacket.planning import smallest_limit
    from jacket.planning._limit import call_bytes
    layers = []
    for _ in range(24):
        layers += [jacket.Dense(64, 64), jacket.Tanh()]
    chain, batch = jacket.Chain(layers + [jacket.Dense(64, 2)]), 512
    params = chain.init(k_params)
    x = jax.random.normal(k_x, (batch, 64), jnp.float32)
    free = jacket.plan(chain, 1)(params, x)
    top, floor = call_bytes(free, free.memory, batch), smallest_limit(chain, batch=batch)
    rows, worst = [], 0.0
    want = jax.jit(jax.vmap(jax.jacfwd(chain, argnums=1), in_axes=(None, 0)))(params, x)
    for limit in (top, int((top * floor) ** 0.5), floor):
        plan = jacket.plan(chain, 1, memory_limit=limit)(params, x)  # for the batch: x has 512 examples
        fn = jax.jit(jax.vmap(jacket.jacobian(chain, 1, order=plan), in_axes=(None, 0)))
        m = fn.lower(params, x).compile().memory_analysis()
        xla = m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
        worst = max(worst, _rel(fn(params, x), want))
        rows.append((f"{plan.memory_limit / 1e6:.3g}", plan.order, plan.chunk or "", plan.checkpoint or "",
                     f"{call_bytes(plan, plan.memory, batch) / 1e6:.3g}", f"{xla / 1e6:.3g}"))
    print(f"\nMemory limits: per-example Jacobians (2 × 64) of {len(chain)} layers for a batch of {batch}, "
          f"planned to fit (jacket.plan(chain, 1, memory_limit=…)(params, x_batch), run under jax.vmap: the bracketing, chunk size and checkpoints; "
          f"the bytes model against XLA's compiled arguments + output + temporaries). Reverse mode's tape "
          f"is what a limit cuts here: checkpointed ADJ sweeps recompute it segment by segment.")
    print(format_table(["limit MB", "order", "chunk", "checkpoint", "model MB", "XLA MB"], rows))
    return worst

