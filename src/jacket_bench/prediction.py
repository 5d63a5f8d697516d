"""How well a cost model predicts measured times: the orders benchmark's predicted-against-
measured points, their accuracy figures and their log-log scatter.

A point is one (family, order): the measured median seconds and each model's prediction. The
calibrated model predicts seconds itself (rates measured by ``jacket calibrate`` in the same
run); the fma model predicts a count, turned into seconds by one rate fitted to all points (the
median of measured / fma), which is the best any single rate could do for it in log terms.
Accuracy: the median of ``|log(predicted / measured)|`` and Spearman's rank correlation.
"""
from __future__ import annotations

import math

__all__ = ["accuracy", "fma_seconds", "spearman", "scatter"]


def _ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # ties share their mean rank
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation of two equal-length sequences (nan for fewer than 2)."""
    if len(a) < 2:
        return float("nan")
    ra, rb = _ranks(list(a)), _ranks(list(b))
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = math.sqrt(sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb))
    return cov / var if var else float("nan")


def fma_seconds(points) -> float:
    """The one rate (seconds per fma) that best fits the fma model to ``points`` in log terms."""
    ratios = sorted(p["measured_s"] / p["fma"] for p in points if p["fma"] > 0)
    return ratios[len(ratios) // 2] if ratios else float("nan")


def accuracy(predicted, measured) -> dict:
    """``{"median_abs_log", "max_abs_log", "spearman", "points"}`` of predictions against times."""
    logs = sorted(abs(math.log(p / m)) for p, m in zip(predicted, measured) if p > 0 and m > 0)
    return {"median_abs_log": logs[len(logs) // 2] if logs else float("nan"),
            "max_abs_log": logs[-1] if logs else float("nan"),
            "spearman": spearman(predicted, measured), "points": len(logs)}


def scatter(ax, points, key: str, title: str):
    """Predicted (``p[key]``) against measured seconds, one marker per family, log-log, with the
    diagonal and the ×1.3 band."""
    import matplotlib.pyplot as plt
    families = sorted({p["family"] for p in points})
    colors = plt.get_cmap("tab10")
    for f, family in enumerate(families):
        mine = [p for p in points if p["family"] == family]
        ax.scatter([p["measured_s"] * 1e3 for p in mine], [p[key] * 1e3 for p in mine], s=18,
                   color=colors(f % 10), label=family)
    values = [p["measured_s"] * 1e3 for p in points] + [p[key] * 1e3 for p in points]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
    for factor in (1.3, 1 / 1.3):
        ax.plot([lo, hi], [lo * factor, hi * factor], color="grey", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured ms")
    ax.set_ylabel("predicted ms")
    ax.set_title(title, fontsize=9)
