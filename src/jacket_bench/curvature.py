"""Curvature: ``jacket.hvp``, ``jacket.ggn_vp``, ``jacket.per_example_grads`` and ``jacket.ntk``
against the JAX programs that compute the same quantities.

Three groups, each timed interleaved with a control (the JAX reference against a second
compilation of itself: its ratio is the noise floor of the group):

* **HVP / GGN**, MLP ``784-512-512-10`` tanh, ``SoftmaxCrossEntropy``, batch 128, float32:
  ``jacket.hvp`` and ``jacket.ggn_vp`` against the HVP of JAX,
  ``jax.jvp(jax.grad(L), (params,), (v,))[1]`` with ``L(p) = loss.apply(chain.apply(p, x), labels)``
  (target ≤ 1.10 each). ``ggn_vp`` is a different quantity; its time is also divided by a JAX
  GGN, ``jax.vjp`` of ``chain.apply`` applied to the loss's HVP (``jax.jvp`` of ``jax.grad`` of
  the loss in the logits) of ``jax.jvp(chain.apply)``. Relative errors against the references
  are printed and stored.
* **Per-example gradients**, same MLP and batch: ``jacket.per_example_grads`` against
  ``jax.vmap(jax.value_and_grad(per-example loss), in_axes=(None, 0, 0))`` (both return the
  per-example losses and gradients; target ≤ 1.0), with XLA's compiled memory analysis
  (temp / argument / output bytes) and the compiled HLO op counts of both.
* **NTK**: ``jacket.ntk`` with ``"auto"``, ``"jacobian"`` and ``"ntvp"`` against neural-tangents'
  implementation 1 (per-example ``jax.jacrev`` parameter Jacobians of both batches under
  ``jax.vmap``, contracted per leaf)
  on shapes where different implementations win: the residual CNN of ``orders.small_cnn``
  (weight sharing: a tangent push costs more than the parameters, the Jacobian contraction
  wins), a narrow MLP with many outputs (``ntvp`` wins) and a wide MLP with one output (a near
  tie in the model). Target: ``auto`` never slower than the reference, within the group's noise
  floor (``|control − 1|``). The cost model's numbers (``jacket.compose.ntk_costs``) and auto's
  choice are stored.
"""
from __future__ import annotations

from .timing import alternate, roofline, write_results

NAME = "curvature"
HVP_TARGET = 1.10
PER_EXAMPLE_TARGET = 1.0
NTK_TARGET = 1.0
HEADLINE_MLP = (784, 512, 512, 10)


def config(full: bool = False) -> dict:
    """Quick and full share the sizes (the headline MLP at batch 128, three NTK shapes at
    n1 = n2 = 8); full takes more and longer samples."""
    return {"mlp": HEADLINE_MLP, "batch": 128, "per_example_mlp": HEADLINE_MLP if full else (784, 256, 10),
            "ntk": [{"name": "cnn 1x8x8 (10 out)", "model": "cnn", "n": 8},
                    {"name": "narrow mlp 64-32-32-100", "widths": (64, 32, 32, 100), "n": 8},
                    {"name": "wide mlp 64-1024-1024-1", "widths": (64, 1024, 1024, 1), "n": 8}],
            "scale": 1, "repeats": 15 if full else 5, "min_sample_s": 0.05 if full else 0.01, "roofline": {}}


def n_steps(cfg: dict) -> int:
    return 2 + len(cfg["ntk"])


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
            "jacket.hvp": jacket.hvp(chain, loss, wrt="params"), "jacket.ggn_vp": jacket.ggn_vp(chain, loss),
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
    from jacket.compose import ntk_costs
    costs = ntk_costs(chain, n1, n2)
    return min(("jacobian", "ntvp"), key=lambda k: costs[k])


# ---- runs ---------------------------------------------------------------------------------
def _time(fns, args, baseline, cfg):
    return alternate(fns, args, repeats=cfg["repeats"], baseline=baseline, min_sample_s=cfg["min_sample_s"])


def measure_hvp(cfg, loss) -> dict:
    import jax
    from .timing import paired_ratio
    chain = _mlp(cfg["mlp"])
    args = _batch(chain, cfg["batch"])
    fns = hvp_candidates(chain, loss)
    timing = _time(fns, args, "jax hvp", cfg)  # first, so compile_s is not a cache hit
    out = {k: jax.jit(f)(*args) for k, f in fns.items()}
    return {"case": f"{'-'.join(map(str, cfg['mlp']))} b{cfg['batch']}", "dims": list(cfg["mlp"]),
            "batch": cfg["batch"], "median_s": timing["median_s"], "compile_s": timing["compile_s"],
            "rounds": timing["rounds"], "ratio": timing["ratio"],
            "ggn_vs_jax_ggn": paired_ratio(timing["rounds"], "jacket.ggn_vp", "jax ggn"),
            "rel_error": {"jacket.hvp vs jax hvp": rel_error(out["jacket.hvp"], out["jax hvp"]),
                          "jacket.ggn_vp vs jax ggn": rel_error(out["jacket.ggn_vp"], out["jax ggn"]),
                          "jax ggn vs jax hvp (different quantities)": rel_error(out["jax ggn"], out["jax hvp"])}}


def measure_per_example(cfg, loss) -> dict:
    import jax
    from .grad import compare_hlo
    chain = _mlp(cfg["per_example_mlp"])
    params, x, labels, _ = _batch(chain, cfg["batch"], seed=1)
    args = (params, x, labels)
    fns = per_example_candidates(chain, loss)
    timing = _time(fns, args, "jax vmap(grad)", cfg)
    (v1, g1) = jax.jit(fns["jacket.per_example_grads"])(*args)
    (v2, g2) = jax.jit(fns["jax vmap(grad)"])(*args)
    pair = {"jacket.per_example_grads": fns["jacket.per_example_grads"], "jax vmap(grad)": fns["jax vmap(grad)"]}
    return {"case": f"{'-'.join(map(str, cfg['per_example_mlp']))} b{cfg['batch']}",
            "dims": list(cfg["per_example_mlp"]), "batch": cfg["batch"], "median_s": timing["median_s"],
            "compile_s": timing["compile_s"], "rounds": timing["rounds"], "ratio": timing["ratio"],
            "rel_error": {"values": rel_error(v1, v2), "grads": rel_error(g1, g2)},
            "memory": {k: memory(f, args) for k, f in pair.items()}, "hlo": compare_hlo(pair, args)}


def measure_ntk(shape, cfg) -> dict:
    import jax
    from jacket.compose import ntk_costs
    chain = ntk_chain(shape, cfg.get("scale", 1))
    n = shape["n"]
    k_p, k_1, k_2 = jax.random.split(jax.random.PRNGKey(2), 3)
    import jax.numpy as jnp
    params = chain.init(k_p, jnp.float32)
    x1 = jax.random.normal(k_1, (n,) + tuple(chain.in_shape), jnp.float32)
    x2 = jax.random.normal(k_2, (n,) + tuple(chain.in_shape), jnp.float32)
    args = (params, x1, x2)
    fns = ntk_candidates(chain)
    timing = _time(fns, args, "jax jacrev", cfg)
    expected = jax.jit(fns["jax jacrev"])(*args)
    errors = {k: rel_error(jax.jit(f)(*args), expected) for k, f in fns.items() if k.startswith("jacket")}
    return {"case": shape["name"], "n1": n, "n2": n, "shapes": [list(s) for s in chain.shapes],
            "layers": [repr(layer) for layer in chain], "median_s": timing["median_s"],
            "compile_s": timing["compile_s"], "rounds": timing["rounds"], "ratio": timing["ratio"],
            "costs": ntk_costs(chain, n, n), "auto_choice": auto_choice(chain, n, n), "rel_error": errors,
            "memory": {k: memory(fns[k], args) for k in ("jax jacrev", "jacket auto")}}


def _noise(result, control):
    return abs(result["ratio"][control] - 1.0)


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket import SoftmaxCrossEntropy
    from jacket._table import format_table
    loss = SoftmaxCrossEntropy()
    peak = roofline(**cfg.get("roofline", {}))
    if tick:
        tick("curvature hvp/ggn")
    hvp = measure_hvp(cfg, loss)
    if tick:
        tick("curvature per-example grads")
    per_ex = measure_per_example(cfg, loss)
    ntk = []
    for shape in cfg["ntk"]:
        if tick:
            tick(f"curvature ntk {shape['name']}")
        ntk.append(measure_ntk(shape, cfg))

    rows = [[f"hvp/ggn {hvp['case']}", k, hvp["median_s"][k] * 1e3, hvp["ratio"][k]] for k in hvp["median_s"]]
    rows.append([f"hvp/ggn {hvp['case']}", "jacket.ggn_vp / jax ggn", float("nan"), hvp["ggn_vs_jax_ggn"]])
    rows += [[f"per-example {per_ex['case']}", k, per_ex["median_s"][k] * 1e3, per_ex["ratio"][k]]
             for k in per_ex["median_s"]]
    for r in ntk:
        rows += [[f"ntk {r['case']} n{r['n1']}", k, r["median_s"][k] * 1e3, r["ratio"][k]] for k in r["median_s"]]
    print(format_table(["group", "candidate", "ms", "time / reference"], rows,
                       title="Curvature products against JAX (float32; reference first in each group; "
                             "'(control)' = the reference compiled again: the noise floor)"))
    print("relative error: " + ", ".join(f"{k} {v:.1e}" for k, v in hvp["rel_error"].items())
          + f"; per-example values {per_ex['rel_error']['values']:.1e}, grads {per_ex['rel_error']['grads']:.1e}; "
          + "; ".join(f"ntk {r['case']}: " + ", ".join(f"{k} {v:.1e}" for k, v in r["rel_error"].items()) for r in ntk))
    print("memory (XLA memory analysis, bytes temp/argument/output): " + "; ".join(
        f"per-example {k}: {m['temp_bytes']}/{m['argument_bytes']}/{m['output_bytes']}"
        for k, m in per_ex["memory"].items()))
    print("per-example compiled HLO, ENTRY ops (jacket/jax): " + ", ".join(
        f"{k} {v['jacket.per_example_grads']}/{v['jax vmap(grad)']}" for k, v in per_ex["hlo"]["ops"].items()))
    for r in ntk:
        print(f"ntk {r['case']} n{r['n1']}: model fma jacobian {r['costs']['jacobian']:.3g}, ntvp "
              f"{r['costs']['ntvp']:.3g} -> auto chose {r['auto_choice']}")

    targets = {}
    hvp_noise = _noise(hvp, "jax hvp (control)")
    for k in ("jacket.hvp", "jacket.ggn_vp"):
        targets[f"{k} / jax hvp <= {HVP_TARGET} ({hvp['ratio'][k]:.3f}, noise floor {hvp_noise:.3f})"] = \
            hvp["ratio"][k] <= HVP_TARGET
    pe = per_ex["ratio"]["jacket.per_example_grads"]
    pe_noise = _noise(per_ex, "jax vmap(grad) (control)")
    targets[f"per_example_grads / jax vmap(grad) <= {PER_EXAMPLE_TARGET} ({pe:.3f}, noise floor {pe_noise:.3f})"] = \
        pe <= PER_EXAMPLE_TARGET
    for r in ntk:
        noise = _noise(r, "jax jacrev (control)")
        ratio = r["ratio"]["jacket auto"]
        targets[f"ntk {r['case']}: auto ({r['auto_choice']}) / jax jacrev <= {NTK_TARGET} + noise floor "
                f"{noise:.3f} ({ratio:.3f})"] = ratio <= NTK_TARGET + noise
    print(", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    record = {"targets": targets, "hvp_target": HVP_TARGET, "per_example_target": PER_EXAMPLE_TARGET,
              "ntk_target": NTK_TARGET, "repeats": cfg["repeats"], "hvp": hvp, "per_example": per_ex,
              "ntk": ntk, "roofline": peak}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def bars(record: dict) -> list:
    """``(label, ratio, target)`` per bar of the figure."""
    hvp, pe = record["hvp"], record["per_example"]
    items = [("hvp / jax hvp", hvp["ratio"]["jacket.hvp"], record["hvp_target"]),
             ("ggn_vp / jax hvp", hvp["ratio"]["jacket.ggn_vp"], record["hvp_target"]),
             ("ggn_vp / jax ggn", hvp["ggn_vs_jax_ggn"], None),
             ("jax hvp control", hvp["ratio"]["jax hvp (control)"], None),
             ("per-example / vmap(grad)", pe["ratio"]["jacket.per_example_grads"], record["per_example_target"]),
             ("per-example control", pe["ratio"]["jax vmap(grad) (control)"], None)]
    for r in record["ntk"]:
        for impl in ("auto", "jacobian", "ntvp"):
            label = f"ntk {r['case']}: {impl}" + (f" ({r['auto_choice']})" if impl == "auto" else "")
            items.append((label, r["ratio"][f"jacket {impl}"], record["ntk_target"] if impl == "auto" else None))
        items.append((f"ntk {r['case']}: control", r["ratio"]["jax jacrev (control)"], None))
    return items


def plot(record: dict):
    """A bar per ratio (log scale), green/red against its target where it has one, grey otherwise."""
    import matplotlib.pyplot as plt
    items = bars(record)
    fig, ax = plt.subplots(figsize=(max(7, 0.45 * len(items) + 2), 4.5))
    colors = ["tab:gray" if t is None else ("tab:green" if r <= t else "tab:red") for _, r, t in items]
    ax.bar(range(len(items)), [r for _, r, _ in items], color=colors)
    for i, (_, _, t) in enumerate(items):
        if t is not None:
            ax.plot([i - 0.4, i + 0.4], [t, t], color="tab:red", ls="--", lw=1)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(items)), [label for label, _, _ in items], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("time / reference (same round)")
    ax.set_title(f"Curvature products vs JAX ({record['device']['device_kind']}); dashed: target")
    return fig
