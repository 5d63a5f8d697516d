"""The programs the curvature benchmark times: jacket's curvature products and parameter
Jacobians, and the JAX programs that compute the same quantities, with the shapes they run on
and the helpers that compare them (relative error, XLA's memory analysis)."""
from __future__ import annotations


def _mlp(widths):
    import jacket
    return jacket.mlp(list(widths), activation="tanh")


def _batch(chain, batch: int, seed: int = 0):
    """``(params, x, labels, v)``: float32 params, a batch ``(B,) + s_0``, labels ``(B,)`` and a
    random params direction ``v``."""
    import jax
    import jax.numpy as jnp
    k_p, k_x, k_y, k_v = jax.random.split(jax.random.PRNGKey(seed), 4)
    params = chain.init(k_p, jnp.float32)
    x = jax.random.normal(k_x, (batch,) + tuple(chain.in_shape), jnp.float32)
    labels = jax.random.randint(k_y, (batch,), 0, chain.out_shape[-1])
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(k_v, len(leaves))
    v = jax.tree_util.tree_unflatten(tree, [jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])
    return params, x, labels, v


def rel_error(a, b) -> float:
    """``‖a − b‖ / ‖b‖`` over all leaves of two pytrees."""
    import jax
    import jax.numpy as jnp
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    num = sum(float(jnp.sum((x - y).astype(jnp.float64 if x.dtype == jnp.float64 else jnp.float32) ** 2))
              for x, y in zip(la, lb))
    den = sum(float(jnp.sum(y ** 2)) for y in lb)
    return (num / max(den, 1e-300)) ** 0.5


def memory(fn, args) -> dict:
    """XLA's compiled memory analysis of ``fn`` on ``args``: temp / argument / output bytes."""
    import jax
    stats = jax.jit(fn).lower(*args).compile().memory_analysis()
    fields = {"temp_bytes": "temp_size_in_bytes", "argument_bytes": "argument_size_in_bytes",
              "output_bytes": "output_size_in_bytes", "alias_bytes": "alias_size_in_bytes"}
    if stats is None:
        return {k: None for k in fields}
    return {k: int(getattr(stats, attr, 0) or 0) for k, attr in fields.items()}


# ---- candidates ---------------------------------------------------------------------------
def hvp_candidates(chain, loss) -> dict:
    """``(params, x, labels, v) -> params-shaped`` products: jacket's HVP and GGN, JAX's HVP
    (``jvp`` of ``grad``) and JAX's GGN (``vjp`` of the net after the loss's HVP of ``jvp``)."""
    import jax
    import jacket

    def jax_hvp(params, x, labels, v):
        return jax.jvp(jax.grad(lambda p: loss.apply(chain.apply(p, x), labels)), (params,), (v,))[1]

    def jax_ggn(params, x, labels, v):
        z, z_dot = jax.jvp(lambda p: chain.apply(p, x), (params,), (v,))
        h_z = jax.jvp(jax.grad(lambda zz: loss.apply(zz, labels)), (z,), (z_dot,))[1]
        _, pull = jax.vjp(lambda p: chain.apply(p, x), params)
        return pull(h_z)[0]
    return {"jax hvp": jax_hvp, "jax hvp (control)": lambda *a: jax_hvp(*a),
            "jacket.hvp": jacket.hvp(chain, loss, argnums=0), "jacket.ggn_vp": jacket.ggn_vp(chain, loss),
            "jax ggn": jax_ggn}


def per_example_candidates(chain, loss) -> dict:
    """``(params, x, labels) -> (values (B,), grads with a leading (B,) axis)``."""
    import jax
    import jacket

    def one(params, x, label):
        return loss.apply(chain.apply(params, x), label)
    ref = jax.vmap(jax.value_and_grad(one), in_axes=(None, 0, 0))
    return {"jax vmap(grad)": ref, "jax vmap(grad) (control)": lambda *a: ref(*a),
            "jacket.per_example_grads": jacket.per_example_grads(chain, loss)}


def ntk_reference(chain):
    """neural-tangents' implementation 1: per-example ``jax.jacrev`` parameter Jacobians of both
    batches (``jax.vmap`` over the examples, as neural-tangents with ``vmap_axes``: the Jacobian
    of the whole batch would pull ``n · n_N`` cotangents through all ``n`` examples),
    ``(n, *s_N, *leaf)`` per leaf, contracted over the leaf axes and summed over leaves:
    ``(n1, n2) + s_N + s_N``."""
    import jax
    import jax.numpy as jnp
    out_rank = len(chain.out_shape)

    def kernel(params, x1, x2):
        def per_example(x):
            return jax.vmap(lambda xi: jax.jacrev(lambda p: chain.apply(p, xi))(params))(x)
        j1, j2 = per_example(x1), per_example(x2)
        total = 0.0
        for a, b in zip(jax.tree_util.tree_leaves(j1), jax.tree_util.tree_leaves(j2)):
            n1, n2 = a.shape[0], b.shape[0]
            a = a.reshape((n1,) + tuple(chain.out_shape) + (-1,))
            b = b.reshape((n2,) + tuple(chain.out_shape) + (-1,))
            axes_a = "".join(chr(ord("a") + i) for i in range(out_rank))
            axes_b = "".join(chr(ord("m") + i) for i in range(out_rank))
            total = total + jnp.einsum(f"i{axes_a}z,j{axes_b}z->ij{axes_a}{axes_b}", a, b)
        return total
    return kernel


def ntk_candidates(chain) -> dict:
    """``(params, x1, x2) -> (n1, n2) + s_N + s_N``."""
    import jacket
    ref = ntk_reference(chain)
    fns = {"jax jacrev": ref, "jax jacrev (control)": lambda *a: ref(*a)}
    for impl in ("auto", "jacobian", "ntvp"):
        fns[f"jacket {impl}"] = (lambda f: lambda p, a, b: f(p, a, b))(jacket.ntk(chain, implementation=impl))
    return fns


def ntk_chain(shape: dict, scale: int = 1):
    from .orders import small_cnn
    if shape.get("model") == "cnn":
        return small_cnn(scale)
    return _mlp(shape["widths"])


def auto_choice(chain, n1: int, n2: int) -> str:
    """The implementation ``implementation="auto"`` picks: the cheaper in :func:`ntk_costs`."""
    from jacket.transforms import ntk_costs
    costs = ntk_costs(chain, n1, n2)
    return min(("jacobian", "ntvp"), key=lambda k: costs[k])


def bottleneck_sequence(tokens: int, features: int, hidden: int, bottleneck: int, width: int):
    """``(tokens, features) -> width``: a Dense shared by every token, tanh, flatten, a narrow
    Dense to ``bottleneck`` outputs, then ``bottleneck -> width -> width``. The rows of a reverse
    sweep through the shared Dense cost ``tokens`` times its parameters, so the planner re-seeds
    the sweep at the bottleneck (a mixed plan for ``argnums=0``)."""
    import jacket
    return jacket.Chain([jacket.Dense(features, hidden), jacket.Tanh(), jacket.Flatten(),
                         jacket.Dense(tokens * hidden, bottleneck), jacket.Dense(bottleneck, width), jacket.Tanh(),
                         jacket.Dense(width, width)], in_shape=(tokens, features))


def params_jacobian_candidates(chain) -> dict:
    """``(params, x) -> `` per-example parameter Jacobians (leaves ``(B,) + s_N + leaf``):
    ``jax.jacrev`` per example under ``jax.vmap`` (the reference, and its control), jacket's
    optimal (mixed) plan and its single reverse sweep."""
    import jax

    import jacket

    def jax_jacrev(params, x):
        return jax.vmap(lambda xi: jax.jacrev(lambda p: chain.apply(p, xi))(params))(x)
    return {"jax jacrev": jax_jacrev, "jax jacrev (control)": lambda *a: jax_jacrev(*a),
            "jacket optimal": jacket.jacobian(chain, 0, order="optimal"),
            "jacket reverse": jacket.jacobian(chain, 0, order="reverse")}


def hessian_candidates(chain, loss) -> dict:
    """``(params, x, labels) -> (P, P)``: ``jax.hessian`` of the loss in the flattened params
    (``jacfwd`` of ``jacrev``; ravel order as ``jacket.hessian``) and ``jacket.hessian``."""
    import jax
    from jax.flatten_util import ravel_pytree
    import jacket

    def jax_hessian(params, x, labels):
        flat, unravel = ravel_pytree(params)
        return jax.hessian(lambda f: loss.apply(chain.apply(unravel(f), x), labels))(flat)
    return {"jax.hessian": jax_hessian, "jax.hessian (control)": lambda *a: jax_hessian(*a),
            "jacket.hessian": jacket.hessian(chain, loss)}
