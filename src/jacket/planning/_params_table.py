"""The printed table of a parameter Jacobian's plan (``Plan.table`` for ``argnums=0``)."""
from __future__ import annotations

from .._table import format_table

__all__ = ["params_table"]


def params_table(plan) -> str:
    """Totals, one row per step (segment sweeps and the products by ``∂y_N/∂y_b``), and one row
    per layer with what each single mode would spend on it."""
    model = plan.model
    n_out, total = model.dims[-1], model.total
    shapes = " -> ".join("×".join(map(str, s)) for s in model.shapes)
    best = min(plan.forward_fma, plan.reverse_fma)
    this = f"{plan.fma:,} fma"
    if best and plan.fma != best:
        this += (f" ({best / plan.fma:.2f}x fewer than the better single mode)" if plan.fma < best else
                 f" ({plan.fma / best:.2f}x the better single mode)")
    order = plan.order or "(no parameters)"
    lines = [("order:", order + (f"  ({plan.name})" if plan.name and plan.name != plan.order else "")),
             ("forward (one tangent per parameter):", f"{plan.forward_fma:,} fma"),
             (f"reverse ({n_out} adjoint rows, shared):", f"{plan.reverse_fma:,} fma"),
             ("this plan:", this)]
    head = [f"  Jacobian with respect to the params of a chain with shapes {shapes}: "
            f"{n_out}×{total} ({total:,} parameters)"]
    head += [f"  {label.ljust(40)} {value}" for label, value in lines]
    steps = format_table(["step", "op", "factors", "result", "fma"],
                         [(k, step.op, step.describe(), step.structure.describe(), step.step_fma)
                          for k, step in enumerate(plan.steps, 1)])
    first = model.first
    layers = format_table(["layer", "", "params", "forward alone: fma of its tangents to the output",
                           f"reverse alone: fma of {n_out} rows through it"],
                          [(t, repr(layer), model.entries[t], model.entries[t] * sum(model.jvp[t:]),
                            n_out * model.vjp[t] if t >= first else 0)
                           for t, layer in enumerate(model.layers, 1)])
    return "\n".join(head) + "\n\n" + steps + "\n\n" + layers
