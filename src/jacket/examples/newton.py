"""Second-order training: Gauss-Newton (Levenberg-Marquardt) steps by conjugate gradient.

Each Levenberg-Marquardt step solves, approximately, ::

    (G + λI) d = −g,     G = Jᵀ H_loss J   (jacket.ggn_vp),   g = ∇L   (jacket.value_and_grad)

by a fixed number of conjugate-gradient iterations on the flattened parameters
(``jax.flatten_util.ravel_pytree``), never forming ``G``: each iteration costs one
Gauss-Newton-vector product (one JVP, the loss's ``hvp``, one VJP). The step ``θ + d`` is kept
only if it lowers the loss; λ follows the ratio ρ of the actual to the predicted reduction
``−(gᵀd + ½ dᵀ(G + λI)d)`` (Martens' rule: ρ > 3/4 → λ·2/3, ρ < 1/4 → λ·3/2, a rejected step → λ·4).
On the convex logistic problem the exact Hessian (``jacket.hvp``) gives Newton-CG the same way;
there the model is linear in its parameters, so ``G`` *is* the Hessian and the two runs agree
to rounding (a check of ``ggn_vp`` against ``hvp``), while on the MLP they differ.

Two problems, each trained from the same initial weights by every method, full batch:

- ``logistic``: Chain([Dense(30, 1)]) with BinaryCrossEntropyWithLogits on the standardised
  breast-cancer data (:mod:`jacket.examples.logistic`'s split);
- ``mlp``: Dense(64, 32)–Tanh–Dense(32, 10) with SoftmaxCrossEntropy on the 8×8 digits
  (:mod:`jacket.examples.mlp`'s split), in float64 like the logistic problem.

The first-order baselines are plain gradient descent and ``optax.adam``. Every method's step is
one jitted function; gradients and curvature products all come from jacket (no ``jax.grad`` or
``jax.jvp`` here). Reported: the steps (and seconds) each method needs to reach a fixed target
training loss per problem, its final loss, and its total time (compilation excluded: every step
function is compiled before its clock starts).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .. import BinaryCrossEntropyWithLogits, Chain, Dense, SoftmaxCrossEntropy, ggn_vp, hvp, mlp, value_and_grad
from . import float64
from . import mlp as _mlp

__all__ = ["PROBLEMS", "conjugate_gradient", "damped_direction", "make_lm_step",
           "MethodRun", "ProblemResult", "NewtonResult", "train", "format_report", "save_plot"]

PROBLEMS = ("logistic", "mlp")

# Per problem: target training loss, gradient-descent and adam learning rates, CG iterations.
SETTINGS = {
    "logistic": dict(target=0.02, gd_lr=0.5, adam_lr=0.05, cg_iterations=10, newton_cg=True),
    "mlp": dict(target=0.01, gd_lr=0.5, adam_lr=0.01, cg_iterations=20, newton_cg=False),
}


# ---- the linear algebra ---------------------------------------------------------------------
def conjugate_gradient(matvec, b, iterations: int):
    """``iterations`` steps of conjugate gradient for ``A d = b`` from ``d = 0`` (A symmetric
    positive definite, given by ``matvec``); a fixed count, so it traces into one ``fori_loop``.
    A vanishing residual or curvature stops the updates (the step size becomes 0)."""
    def body(_, state):
        d, r, p, rs = state
        ap = matvec(p)
        pap = p @ ap
        alpha = jnp.where(pap > 0, rs / jnp.where(pap > 0, pap, 1), 0)
        d, r = d + alpha * p, r - alpha * ap
        rs_new = r @ r
        beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1), 0)
        return d, r, r + beta * p, rs_new

    zero = jnp.zeros_like(b)
    d, *_ = jax.lax.fori_loop(0, iterations, body, (zero, b, b, b @ b))
    return d


def damped_direction(product, params, x, y, grads, damping, iterations: int):
    """``d ≈ −(C + λI)⁻¹ g`` by CG on the flattened parameters, ``C v = product(params, x, y, v)``
    (``jacket.ggn_vp`` or ``jacket.hvp``); returns the flat ``(d, g, (C + λI) d)``."""
    g, unravel = ravel_pytree(grads)

    def matvec(v):
        return ravel_pytree(product(params, x, y, unravel(v)))[0] + damping * v

    d = conjugate_gradient(matvec, -g, iterations)
    return d, g, matvec(d)


def make_lm_step(chain: Chain, loss, iterations: int, curvature: str = "ggn"):
    """The jitted Levenberg-Marquardt step ``(params, λ, x, y) -> (params, λ, loss before)``.

    ``curvature``: ``"ggn"`` (Gauss-Newton, ``jacket.ggn_vp``) or ``"hessian"`` (Newton-CG,
    ``jacket.hvp``; for convex problems)."""
    if curvature not in ("ggn", "hessian"):
        raise ValueError(f"curvature must be 'ggn' or 'hessian', got {curvature!r}")
    grad_fn = value_and_grad(chain, loss)
    product = (ggn_vp if curvature == "ggn" else hvp)(chain, loss)

    @jax.jit
    def step(params, damping, x, y):
        value, grads = grad_fn(params, x, y)
        d, g, cd = damped_direction(product, params, x, y, grads, damping, iterations)
        flat, unravel = ravel_pytree(params)
        trial = unravel(flat + d)
        new_value = loss.apply(chain.apply(trial, x), y)
        predicted = -(g @ d + 0.5 * d @ cd)  # the quadratic model's decrease, > 0
        rho = (value - new_value) / jnp.where(predicted > 0, predicted, 1)
        accept = jnp.isfinite(new_value) & (new_value < value)
        damping = jnp.where(~accept, damping * 4.0,
                            jnp.where(rho > 0.75, damping * (2 / 3), jnp.where(rho < 0.25, damping * 1.5, damping)))
        damping = jnp.clip(damping, 1e-8, 1e8)
        params = jax.tree_util.tree_map(lambda new, old: jnp.where(accept, new, old), trial, params)
        return params, damping, value
    return step


# ---- the runs -------------------------------------------------------------------------------
@dataclass
class MethodRun:
    """One method on one problem: ``losses[k]`` the training loss after ``k`` steps (``k = 0``
    the initial loss), ``times[k]`` the seconds spent up to then; ``steps_to_target`` the first
    ``k`` with ``losses[k] ≤ target`` (``None``: not within the budget)."""
    name: str
    losses: list = field(default_factory=list)
    times: list = field(default_factory=list)
    steps_to_target: int | None = None
    seconds_to_target: float | None = None

    @property
    def final_loss(self) -> float:
        return self.losses[-1]

    @property
    def seconds(self) -> float:
        return self.times[-1]


@dataclass
class ProblemResult:
    name: str
    title: str
    target: float
    steps: int
    methods: list

    def method(self, prefix: str) -> MethodRun:
        return next(m for m in self.methods if m.name.startswith(prefix))


@dataclass
class NewtonResult:
    problems: list
    seed: int
    steps: int


def _problem(name: str, seed: int):
    """``(chain, loss, params, x, y, title)`` in float64 (call inside :func:`float64`)."""
    if name == "logistic":
        from .logistic import load_data
        data = load_data(seed)
        chain, loss = Chain([Dense(data.x_train.shape[1], 1)]), BinaryCrossEntropyWithLogits()
        title = f"logistic regression, breast cancer ({len(data.x_train)} train)"
        y = data.y_train
    elif name == "mlp":
        from .mlp import load_data
        data = load_data(seed)
        chain, loss = mlp([64, 32, 10], activation="tanh"), SoftmaxCrossEntropy()
        title = f"Dense(64,32)-Tanh-Dense(32,10), digits ({len(data.x_train)} train)"
        y = data.y_train
    else:
        raise ValueError(f"problem must be one of {PROBLEMS}, got {name!r}")
    params = chain.init(jax.random.PRNGKey(seed), dtype=jnp.float64)
    return chain, loss, params, jnp.asarray(data.x_train, jnp.float64), jnp.asarray(y), title


def _run(name, step, params, state, x, y, steps, target, loss_fn) -> MethodRun:
    jax.block_until_ready(step(params, state, x, y))  # compile before the clock starts
    run = MethodRun(name)
    elapsed = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        params, state, value = step(params, state, x, y)
        value = float(value)
        elapsed += time.perf_counter() - start
        run.losses.append(value)
        run.times.append(elapsed)
    run.losses.append(float(loss_fn(params)))  # the loss after the last step
    run.times.append(elapsed)
    run.times = [0.0] + run.times[:-1]  # times[k]: seconds spent before losses[k] was known
    for k, value in enumerate(run.losses):
        if value <= target:
            run.steps_to_target, run.seconds_to_target = k, run.times[k]
            break
    return run


def train_problem(name: str, steps: int = 300, seed: int = 0, target: float | None = None,
                  damping: float = 1.0) -> ProblemResult:
    """Every method on one problem for ``steps`` steps each, from the same initial weights."""
    import optax

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    settings = SETTINGS[name] if name in SETTINGS else None
    if settings is None:
        raise ValueError(f"problem must be one of {PROBLEMS}, got {name!r}")
    target = settings["target"] if target is None else target
    with float64():
        chain, loss, params, x, y, title = _problem(name, seed)
        loss_fn = jax.jit(lambda p: loss.apply(chain.apply(p, x), y))
        iters = settings["cg_iterations"]
        lam = jnp.asarray(damping, jnp.float64)
        methods = [_run(f"Gauss-Newton LM (CG {iters})", make_lm_step(chain, loss, iters, "ggn"),
                        params, lam, x, y, steps, target, loss_fn)]
        if settings["newton_cg"]:
            methods.append(_run(f"Newton-CG LM (CG {iters})", make_lm_step(chain, loss, iters, "hessian"),
                                params, lam, x, y, steps, target, loss_fn))
        for label, optimizer in ((f"gradient descent (lr {settings['gd_lr']:g})", optax.sgd(settings["gd_lr"])),
                                 (f"optax.adam (lr {settings['adam_lr']:g})", optax.adam(settings["adam_lr"]))):
            methods.append(_run(label, _mlp.make_update(chain, loss, optimizer), params,
                                optimizer.init(params), x, y, steps, target, loss_fn))
    return ProblemResult(name=name, title=title, target=target, steps=steps, methods=methods)


def train(problem: str = "both", steps: int = 300, seed: int = 0) -> NewtonResult:
    """``problem``: ``"logistic"``, ``"mlp"`` or ``"both"`` (default)."""
    names = PROBLEMS if problem == "both" else (problem,)
    for name in names:
        if name not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS + ('both',)}, got {problem!r}")
    return NewtonResult(problems=[train_problem(n, steps, seed) for n in names], seed=seed, steps=steps)


# ---- report and plot ------------------------------------------------------------------------
def _summary(problem: ProblemResult) -> str:
    def reached(m):
        return "did not within the budget" if m.steps_to_target is None else f"in {m.steps_to_target}"
    gn, gd, adam = problem.method("Gauss-Newton"), problem.method("gradient"), problem.method("optax.adam")
    head = (f"Gauss-Newton reached loss {problem.target:g} in {gn.steps_to_target} steps"
            if gn.steps_to_target is not None else
            f"Gauss-Newton did not reach loss {problem.target:g} within {problem.steps} steps")
    return f"{problem.name}: {head}, gradient descent {reached(gd)}, adam {reached(adam)}"


def format_report(result: NewtonResult) -> str:
    """The plain-text report ``jacket train newton`` prints: a table per problem, then one
    summary line per problem."""
    from .._table import format_table

    blocks = []
    for problem in result.problems:
        rows = [[m.name, "-" if m.steps_to_target is None else m.steps_to_target,
                 "-" if m.seconds_to_target is None else m.seconds_to_target, m.final_loss, m.seconds]
                for m in problem.methods]
        blocks.append(format_table(["method", "steps to target", "seconds to target",
                                    f"loss (step {problem.steps})", "seconds"], rows,
                                   title=f"{problem.title}, full batch, float64: target loss {problem.target:g}"))
    return "\n\n".join(blocks) + "\n\n" + "\n".join(_summary(p) for p in result.problems)


def save_plot(result: NewtonResult, path) -> None:
    """Training loss against step for every method, log-scale, one panel per problem (PNG).

    Raises ``ImportError`` naming the extra to install if matplotlib is missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        from . import INSTALL_HINT
        raise ImportError(f"saving the training curve needs matplotlib; install it with: {INSTALL_HINT}") from err
    fig = Figure(figsize=(5.5 * len(result.problems), 4))
    axes = np.atleast_1d(fig.subplots(1, len(result.problems)))
    for ax, problem in zip(axes, result.problems):
        for m in problem.methods:
            ax.plot(range(len(m.losses)), m.losses, label=m.name)
        ax.axhline(problem.target, color="grey", ls=":", lw=1, label=f"target {problem.target:g}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(problem.title, fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
