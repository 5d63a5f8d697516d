"""Pictures of plans (optional: needs matplotlib, ``pip install "jacket[plots]"``)."""
from __future__ import annotations

__all__ = ["plot_plan"]

def _layout(node, depth, positions):
    """x: the mean of the factors a node covers (later factors to the left, as in the product)."""
    for child in node.children():
        _layout(child, depth + 1, positions)
    positions[id(node)] = (-(node.lo + node.hi) / 2, -depth)


def plot_plan(plan, path=None, title=None):
    """Draw the plan tree (root on top, factors J_N … J_1 left to right) and save it to ``path``
    (PNG) if given. Returns the matplotlib figure."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError('plot_plan needs matplotlib: pip install "jacket[plots]"') from err
    positions = {}
    _layout(plan.root, 0, positions)
    depth = 1 + max(-y for _, y in positions.values())
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(plan.dims)), 1.3 + 1.1 * depth))
    for node in plan.steps:
        x, y = positions[id(node)]
        for child in node.children():
            cx, cy = positions[id(child)]
            ax.plot([x, cx], [y, cy], color="#888888", zorder=1)
        span = f"J{node.lo}" if node.lo == node.hi else f"J{node.hi}..J{node.lo}"
        label = f"{node.op} {span}\n{node.structure.describe()}\n{node.step_fma:,} fma"
        ax.text(x, y, label, ha="center", va="center", fontsize=8, zorder=2,
                bbox=dict(boxstyle="round", facecolor=node.colour, edgecolor="#555555"))
    ax.set_axis_off()
    ax.set_xlim(-len(plan.dims) - 0.2, 0.2)
    ax.set_ylim(-depth + 0.4, 0.6)
    ax.set_title(title or f"{plan.order}\n{plan.fma:,} fma, {plan.speedup:.3g}x vs best of forward/reverse",
                 fontsize=9)
    fig.tight_layout()
    if path:
        fig.savefig(path, dpi=120)
    return fig
