"""Scaling over devices: sharded Jacobian accumulation and data-parallel gradients on 1, 2, 4 devices.

Each device count runs in its own process, because XLA fixes the number of (simulated) CPU
devices when JAX starts (``XLA_FLAGS=--xla_force_host_platform_device_count=N``). On a CPU the
simulated devices share the same cores, so this run shows correctness and the overhead of
partitioning, not speed; on a machine with several accelerators it uses the devices that are
there (counts above what exists are skipped). Each worker checks its sharded results against
the single-device ones computed in the same process and reports the largest difference.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from .timing import device_info, input_plan, write_results

NAME = "scaling"


def config(full: bool = False) -> dict:
    return {"devices": (1, 2, 4), "width": 512 if full else 256, "depth": 3, "batch": 512 if full else 256,
            "repeats": 7 if full else 3}


def n_steps(cfg: dict) -> int:
    return len(cfg["devices"])


def _worker(devices: int, cfg: dict) -> dict:
    """Runs in a fresh process with ``devices`` devices visible; returns times and differences."""
    import jax
    import jax.numpy as jnp

    import jacket
    from jacket.execute.sharding import data_parallel, make_mesh

    from .timing import time_fn
    width, depth = cfg["width"], cfg["depth"]
    chain = jacket.mlp([width] * (depth + 1) + [10], activation="tanh")
    params = chain.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (width,), jnp.float32)
    mesh = make_mesh(devices)
    single = jax.jit(jacket.jacobian(chain, 1, order="forward"))
    sharded = jax.jit(jacket.jacobian(chain, 1, order="forward", mesh=mesh))
    jac_diff = float(jnp.max(jnp.abs(sharded(params, x) - single(params, x))))
    jac_time = time_fn(sharded, (params, x), repeats=cfg["repeats"])

    loss = jacket.SoftmaxCrossEntropy()
    xb = jax.random.normal(jax.random.key(2), (cfg["batch"], width), jnp.float32)
    labels = jnp.arange(cfg["batch"]) % 10
    step = jax.jit(jacket.value_and_grad(chain, loss))
    value, grads = step(params, xb, labels)
    dp = data_parallel(devices)
    args = (dp.put_replicated(params),) + dp.put_batch(xb, labels)
    value_n, grads_n = step(*args)
    grad_diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                    zip(jax.tree_util.tree_leaves((value_n, grads_n)), jax.tree_util.tree_leaves((value, grads))))
    grad_time = time_fn(step, args, repeats=cfg["repeats"])
    return {"devices": devices, "jacobian_s": jac_time["median_s"], "jacobian_max_diff": jac_diff,
            "grad_s": grad_time["median_s"], "grad_max_diff": grad_diff,
            "plan_fma_per_device": input_plan(chain, "forward", mesh=devices).fma}


def _spawn(devices: int, cfg: dict) -> dict | None:
    env = dict(os.environ)
    if device_info()["platform"] == "cpu":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    result = subprocess.run([sys.executable, "-m", "jacket_bench.scaling", json.dumps({**cfg, "devices": devices})],
                            env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        if "asked for" in result.stderr and "devices but JAX sees" in result.stderr:
            return None  # fewer real devices than asked for: skip this count
        raise RuntimeError(f"scaling worker for {devices} devices failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(cfg: dict, out: str | None = None, tick=None) -> dict:
    from jacket._table import format_table
    results = []
    for devices in cfg["devices"]:
        if tick:
            tick(f"scaling {devices} device(s)")
        measured = _spawn(devices, cfg)
        if measured is not None:
            results.append(measured)
    base = results[0]
    rows = [(r["devices"], r["jacobian_s"] * 1e3, r["jacobian_s"] / base["jacobian_s"], r["jacobian_max_diff"],
             r["grad_s"] * 1e3, r["grad_s"] / base["grad_s"], r["grad_max_diff"]) for r in results]
    title = (f"Sharded forward-mode Jacobian ({cfg['width']} tangents, {cfg['depth']} × Dense({cfg['width']})+tanh) "
             f"and data-parallel value_and_grad (batch {cfg['batch']}), float32")
    print(format_table(["devices", "jacobian ms", "vs 1", "max diff", "grad ms", "vs 1", "max diff"], rows,
                       title=title))
    simulated = device_info()["platform"] == "cpu"
    if simulated:
        print("(simulated CPU devices share the same cores: these times show overhead, not speed-up)")
    exact = all(r["jacobian_max_diff"] < 1e-4 and r["grad_max_diff"] < 1e-4 for r in results)
    record = {"config": cfg, "simulated_devices": simulated, "results": results,
              "targets": {"sharded results equal single-device ones (float32, < 1e-4)": exact}}
    record["files"] = write_results(NAME, record, out, figure=plot)
    return record


def plot(record: dict):
    import matplotlib.pyplot as plt
    results = record["results"]
    devices = [r["devices"] for r in results]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("jacobian_s", "sharded Jacobian (forward)"), ("grad_s", "data-parallel value_and_grad")):
        ax.plot(devices, [r[key] / results[0][key] for r in results], "o-", label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(devices)
    ax.set_xlabel("devices" + (" (simulated on the same CPU cores)" if record["simulated_devices"] else ""))
    ax.set_ylabel("time relative to 1 device")
    ax.set_title("Scaling over devices")
    ax.legend()
    return fig


if __name__ == "__main__":
    task = json.loads(sys.argv[1])
    print(json.dumps(_worker(task.pop("devices"), task)))
