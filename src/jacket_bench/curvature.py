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
  floor (``|control − 1|``). The cost model's numbers (``jacket.transforms.ntk_costs``) and auto's
  choice are stored.
* **Parameter Jacobian**, ``bottleneck_sequence`` (64 tokens × 32 features, a shared Dense to 64,
  flatten, Dense to 4, then 4 → 256 → 256), batch 4: ``jacket.jacobian(chain, argnums=0)`` with the
  optimal (mixed) plan and with one reverse sweep against per-example ``jax.jacrev`` (target:
  optimal ≤ 1.0), with the model's fma ratio of the two plans beside the measured one.
* **Dense Hessian**, MLP 16-32-4, batch 64, P = 676: ``jacket.hessian`` (P HVPs under
  ``jax.vmap``) against ``jax.hessian`` of the loss in the flattened params (``jacfwd`` of
  ``jacrev``: also P tangents through a reverse pass), with XLA's memory analysis of both
  (reported, no target: both do P HVPs' work).
"""
from __future__ import annotations

from .curvature_cases import (_batch, _mlp, auto_choice, bottleneck_sequence, hessian_candidates,  # noqa: F401
                              hvp_candidates, memory, ntk_candidates, ntk_chain, ntk_reference,
                              params_jacobian_candidates, per_example_candidates, rel_error)
from .timing import alternate, roofline, write_results

NAME = "curvature"
HVP_TARGET = 1.10
PER_EXAMPLE_TARGET = 1.0
NTK_TARGET = 1.0
PARAMS_TARGET = 1.0
HEADLINE_MLP = (784, 512, 512, 10)


def config(full: bool = False) -> dict:
    """Quick and full share the sizes (the headline MLP at batch 128, three NTK shapes at
    n1 = n2 = 8); full takes more and longer samples."""
    return {"mlp": HEADLINE_MLP, "batch": 128, "per_example_mlp": HEADLINE_MLP if full else (784, 256, 10),
            "ntk": [{"name": "cnn 1x8x8 (10 out)", "model": "cnn", "n": 8},
                    {"name": "narrow mlp 64-32-32-100", "widths": (64, 32, 32, 100), "n": 8},
                    {"name": "wide mlp 64-1024-1024-1", "widths": (64, 1024, 1024, 1), "n": 8}],
            "params_chain": {"tokens": 64, "features": 32, "hidden": 64, "bottleneck": 4, "width": 256},
            "params_batch": 4, "hessian_mlp": (16, 32, 4), "hessian_batch": 64,
            "scale": 1, "repeats": 15 if full else 5, "min_sample_s": 0.05 if full else 0.01, "roofline": {}}


def n_steps(cfg: dict) -> int:
    return 4 + len(cfg["ntk"])


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
    from jacket.transforms import ntk_costs
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


def measure_params_jacobian(cfg) -> dict:
    import jax
    import jax.numpy as jnp
    import jacket
    chain = bottleneck_sequence(**cfg["params_chain"])
    k_p, k_x = jax.random.split(jax.random.PRNGKey(3))
    params = chain.init(k_p, jnp.float32)
    x = jax.random.normal(k_x, (cfg["params_batch"],) + tuple(chain.in_shape), jnp.float32)
    fns = params_jacobian_candidates(chain)
    timing = _time(fns, (params, x), "jax jacrev", cfg)
    expected = jax.jit(fns["jax jacrev"])(params, x)
    plans = {o: jacket.plan(chain, 0, order=o)(None, jax.ShapeDtypeStruct(chain.in_shape, "float32"))
             for o in ("optimal", "reverse", "forward")}
    return {"case": f"bottleneck sequence {'×'.join(map(str, chain.in_shape))} -> {chain.dims[-1]} "
                    f"b{cfg['params_batch']}", "shapes": [list(s) for s in chain.shapes],
            "layers": [repr(layer) for layer in chain], "plan": plans["optimal"].order,
            "model_fma": {o: plan.fma for o, plan in plans.items()},
            "median_s": timing["median_s"], "compile_s": timing["compile_s"], "rounds": timing["rounds"],
            "ratio": timing["ratio"],
            "rel_error": {k: rel_error(jax.jit(f)(params, x), expected) for k, f in fns.items() if k.startswith("jacket")},
            "memory": {k: memory(fns[k], (params, x)) for k in ("jax jacrev", "jacket optimal", "jacket reverse")}}


def measure_hessian(cfg, loss) -> dict:
    import jax
    chain = _mlp(cfg["hessian_mlp"])
    params, x, labels, _ = _batch(chain, cfg["hessian_batch"], seed=4)
    args = (params, x, labels)
    fns = hessian_candidates(chain, loss)
    timing = _time(fns, args, "jax.hessian", cfg)
    expected = jax.jit(fns["jax.hessian"])(*args)
    p = int(expected.shape[0])
    return {"case": f"{'-'.join(map(str, cfg['hessian_mlp']))} b{cfg['hessian_batch']} P{p}", "params": p,
            "median_s": timing["median_s"], "compile_s": timing["compile_s"], "rounds": timing["rounds"],
            "ratio": timing["ratio"], "rel_error": rel_error(jax.jit(fns["jacket.hessian"])(*args), expected),
            "memory": {k: memory(fns[k], args) for k in ("jax.hessian", "jacket.hessian")}}


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
    if tick:
        tick("curvature parameter Jacobian")
    pj = measure_params_jacobian(cfg)
    if tick:
        tick("curvature dense Hessian")
    hess = measure_hessian(cfg, loss)

    rows = [[f"hvp/ggn {hvp['case']}", k, hvp["median_s"][k] * 1e3, hvp["ratio"][k]] for k in hvp["median_s"]]
    rows.append([f"hvp/ggn {hvp['case']}", "jacket.ggn_vp / jax ggn", float("nan"), hvp["ggn_vs_jax_ggn"]])
    rows += [[f"per-example {per_ex['case']}", k, per_ex["median_s"][k] * 1e3, per_ex["ratio"][k]]
             for k in per_ex["median_s"]]
    for r in ntk:
        rows += [[f"ntk {r['case']} n{r['n1']}", k, r["median_s"][k] * 1e3, r["ratio"][k]] for k in r["median_s"]]
    rows += [[f"params jacobian {pj['case']}", k, pj["median_s"][k] * 1e3, pj["ratio"][k]] for k in pj["median_s"]]
    rows += [[f"hessian {hess['case']}", k, hess["median_s"][k] * 1e3, hess["ratio"][k]] for k in hess["median_s"]]
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
    measured = pj["ratio"]["jacket optimal"] / pj["ratio"]["jacket reverse"]
    print(f"params jacobian: plan {pj['plan']}; model fma optimal/reverse "
          f"{pj['model_fma']['optimal'] / pj['model_fma']['reverse']:.2f}, measured time {measured:.2f}; memory temp "
          + ", ".join(f"{k} {m['temp_bytes']}" for k, m in pj["memory"].items()))
    print(f"hessian {hess['case']}: rel error {hess['rel_error']:.1e}; memory temp "
          + ", ".join(f"{k} {m['temp_bytes']}" for k, m in hess["memory"].items()))
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
    ratio, noise = pj["ratio"]["jacket optimal"], _noise(pj, "jax jacrev (control)")
    targets[f"params jacobian: optimal / jax jacrev <= {PARAMS_TARGET} ({ratio:.3f}, noise floor {noise:.3f})"] = \
        ratio <= PARAMS_TARGET
    print(", ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in targets.items()))
    record = {"targets": targets, "hvp_target": HVP_TARGET, "per_example_target": PER_EXAMPLE_TARGET,
              "ntk_target": NTK_TARGET, "repeats": cfg["repeats"], "hvp": hvp, "per_example": per_ex,
              "ntk": ntk, "params_jacobian": pj, "params_target": PARAMS_TARGET, "hessian": hess,
              "roofline": peak}
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
    pj, hess = record["params_jacobian"], record["hessian"]
    items += [("params jac: optimal", pj["ratio"]["jacket optimal"], record["params_target"]),
              ("params jac: reverse", pj["ratio"]["jacket reverse"], None),
              ("params jac: control", pj["ratio"]["jax jacrev (control)"], None),
              ("hessian / jax.hessian", hess["ratio"]["jacket.hessian"], None),
              ("hessian control", hess["ratio"]["jax.hessian (control)"], None)]
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
