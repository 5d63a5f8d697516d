"""``jacket train logistic | mlp | cnn | transformer | newton``: backpropagation examples, runnable.

``logistic``: logistic regression on the breast-cancer data, the engine's gradient checked
against the closed form Xᵀ(p − y)/N and jax.grad at every step (jacket/examples/logistic.py).
``mlp``: Dense(64,32)–Tanh–Dense(32,10) on the 8×8 digits with optax.adam; prints
``test accuracy: 0.xxxx`` last and saves the loss/accuracy curve (jacket/examples/mlp.py).
``cnn``: a residual CNN (Conv2D, Residual, MaxPool2D, Flatten, Dense) on the same digits as
``(1, 8, 8)`` images; the same report and curve (jacket/examples/cnn.py).
``transformer``: one pre-norm transformer block (self-attention, LayerNorm, GELU MLP) that learns
to sort or reverse strings of 8 digits it generates itself; reports the loss against the chance
level ln V and the held-out token and whole-string accuracy (jacket/examples/transformer.py).
``newton``: Gauss-Newton / Levenberg-Marquardt steps, (G + λI) d = −g solved by conjugate gradient
with ``jacket.ggn_vp``, against gradient descent and adam on the logistic and MLP problems; a table
of steps to a target loss and a log-scale loss curve (jacket/examples/newton.py).
All but ``transformer`` need scikit-learn for the data; every plot needs matplotlib (both in
the ``examples`` extra). Every gradient comes from ``jacket.value_and_grad``, every curvature
product from ``jacket.ggn_vp`` or ``jacket.hvp``.
"""
from __future__ import annotations

import sys

HELP = ("train the backprop examples: logistic regression (breast cancer), an MLP or a residual CNN "
        "(digits), a transformer block (sorting digit strings), Gauss-Newton against first-order methods")

PLOTS = {name: f"jacket-train-{name}.png" for name in ("mlp", "cnn", "transformer", "newton")}  # default --plot
DEFAULT_PLOT = PLOTS["mlp"]


def _add_schedule(parser, epochs, batch_size, lr, data="the training split", seeded="split") -> None:
    """``--epochs``, ``--batch-size``, ``--lr`` (optax.adam) and ``--seed`` of the mini-batch examples."""
    parser.add_argument("--epochs", type=int, default=epochs, help=f"passes over {data} (default {epochs})")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"mini-batch size (default {batch_size})")
    parser.add_argument("--lr", type=float, default=lr, help=f"optax.adam learning rate (default {lr:g})")
    parser.add_argument("--seed", type=int, default=0, help=f"{seeded}, initial weights and shuffles (default 0)")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="example", metavar="EXAMPLE", required=True)

    logistic = sub.add_parser("logistic", help="logistic regression on breast cancer, gradient checked every step",
                              description="Logistic regression (Chain([Dense(30, 1)]) with "
                              "BinaryCrossEntropyWithLogits) trained by plain gradient descent and by "
                              "optax.adam; at every step the engine's gradient is compared with the closed "
                              "form Xᵀ(σ(Xw+b) − y)/N and with jax.grad.")
    logistic.add_argument("--steps", type=int, default=300, help="steps per optimizer (default 300)")
    logistic.add_argument("--lr", type=float, default=0.5, help="gradient-descent step size (default 0.5)")
    logistic.add_argument("--adam-lr", type=float, default=0.05, help="optax.adam learning rate (default 0.05)")
    logistic.add_argument("--seed", type=int, default=0, help="split and initial weights (default 0)")
    logistic.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                          help="float64 (default) makes the gradient comparison tight: only rounding remains")
    logistic.add_argument("--quick", action="store_true", help="25 steps, for smoke tests")

    mlp = sub.add_parser("mlp", help="Dense(64,32)-Tanh-Dense(32,10) on the 8x8 digits with optax.adam",
                         description="Train Chain([Dense(64, 32), Tanh(), Dense(32, 10)]) with "
                         "SoftmaxCrossEntropy on scikit-learn's digits (pixels / 16, 80/20 split), "
                         "mini-batch optax.adam, gradients from jacket.value_and_grad in a jitted step. "
                         "The last line printed is 'test accuracy: 0.xxxx'.")
    _add_schedule(mlp, epochs=30, batch_size=32, lr=1e-2)
    mlp.add_argument("--activation", choices=("tanh", "sigmoid"), default="tanh", help="hidden activation")
    _add_output_options(mlp, "mlp", 20)
    mlp.add_argument("--devices", type=int, default=None, metavar="N",
                     help="data-parallel over N devices (on a CPU, simulate them with "
                          "XLA_FLAGS=--xla_force_host_platform_device_count=N)")

    cnn = sub.add_parser("cnn", help="a residual CNN (Conv2D, Residual, MaxPool2D) on the 8x8 digits",
                         description="Train Chain([Conv2D(1, 16, 3), ReLU(), Residual([Conv2D(16, 16, 3), "
                         "ReLU(), Conv2D(16, 16, 3)]), ReLU(), MaxPool2D(2), Flatten(), Dense(256, 10)]) "
                         "with SoftmaxCrossEntropy on scikit-learn's digits as (1, 8, 8) images (pixels / 16, "
                         "the mlp example's 80/20 split), mini-batch optax.adam, gradients from "
                         "jacket.value_and_grad in a jitted step. The last line printed is "
                         "'test accuracy: 0.xxxx'.")
    _add_schedule(cnn, epochs=15, batch_size=32, lr=3e-3)
    cnn.add_argument("--channels", type=int, default=16, help="feature maps of every convolution (default 16)")
    _add_output_options(cnn, "cnn", 20)

    tf = sub.add_parser("transformer", help="a transformer block that learns to sort (or reverse) digit strings",
                        description="Train one pre-norm transformer block (Dense(V, d) on one-hot tokens as "
                        "the embedding, PositionEmbedding, Residual([LayerNorm, MultiHeadSelfAttention]), "
                        "Residual([LayerNorm, Dense, GELU, Dense]), LayerNorm, Dense(d, V)) with "
                        "SoftmaxCrossEntropy over every position, on random strings of 8 digits it "
                        "generates itself, with optax.adam and gradients from jacket.value_and_grad. "
                        "Reports the loss against the chance level ln V and the token and whole-string "
                        "accuracy on held-out strings.")
    tf.add_argument("--task", choices=("sort", "reverse"), default="sort",
                    help="the target string: the input sorted (default) or reversed")
    _add_schedule(tf, epochs=8, batch_size=64, lr=3e-3, data="the 8192 training strings", seeded="strings")
    tf.add_argument("--d-model", type=int, default=32, help="width of the block (default 32)")
    tf.add_argument("--heads", type=int, default=4, help="attention heads, dividing --d-model (default 4)")
    _add_output_options(tf, "transformer", 60)

    newton = sub.add_parser("newton", help="Gauss-Newton (Levenberg-Marquardt by CG) vs gradient descent and adam",
                            description="Levenberg-Marquardt steps (G + λI) d = −g, solved by a fixed number of "
                            "conjugate-gradient iterations with G·v from jacket.ggn_vp (and Newton-CG with "
                            "jacket.hvp on the convex logistic problem), against gradient descent and "
                            "optax.adam from the same initial weights, full batch, float64: logistic "
                            "regression on breast cancer and Dense(64,32)-Tanh-Dense(32,10) on the digits. "
                            "Prints the steps and seconds each method needs to reach a target training loss.")
    newton.add_argument("--problem", choices=("logistic", "mlp", "both"), default="both",
                        help="which problem (default both)")
    newton.add_argument("--steps", type=int, default=300, help="steps per method (default 300)")
    newton.add_argument("--seed", type=int, default=0, help="split and initial weights (default 0)")
    plot = PLOTS["newton"]
    newton.add_argument("--plot", metavar="PATH", default=plot,
                        help=f"where to save the loss-against-step PNG (default ./{plot})")
    newton.add_argument("--no-plot", action="store_true", help="don't save the curve")
    newton.add_argument("--quick", action="store_true", help="20 steps per method, for smoke tests")


def _add_output_options(parser, name: str, quick_steps: int) -> None:
    """--plot, --no-plot, --no-progress, --quick: shared by the optax examples."""
    plot = PLOTS[name]
    parser.add_argument("--plot", metavar="PATH", default=plot,
                        help=f"where to save the loss/accuracy curve PNG (default ./{plot})")
    parser.add_argument("--no-plot", action="store_true", help="don't save the curve")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar; print one line per epoch")
    parser.add_argument("--quick", action="store_true",
                        help=f"one epoch of at most {quick_steps} steps, for smoke tests")


def run(args) -> int:
    try:
        return {"logistic": _logistic, "mlp": _mlp, "cnn": _cnn, "transformer": _transformer,
                "newton": _newton}[args.example](args)
    except ImportError as err:
        # The examples' optional dependencies: the message names the extra to install.
        print(f"jacket train {args.example}: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # out-of-range options (steps, epochs, batch size, ...)
        print(f"jacket train {args.example}: {err}", file=sys.stderr)
        return 2


def _logistic(args) -> int:
    from ..examples import logistic

    steps = 25 if args.quick else args.steps
    result = logistic.train(steps=steps, learning_rate=args.lr, adam_learning_rate=args.adam_lr,
                            seed=args.seed, dtype=args.dtype)
    print(logistic.format_report(result))
    return 0


def _report(example, result, args, curve: str = "loss/accuracy curve") -> int:
    """Save the curve (unless --no-plot; a missing matplotlib only warns), print the report."""
    if not args.no_plot:
        try:
            example.save_plot(result, args.plot)
            print(f"saved the {curve} to {args.plot}")
        except (ImportError, OSError) as err:
            print(f"not saving the curve: {err}", file=sys.stderr)
    print(example.format_report(result))
    return 0


def _mlp(args) -> int:
    from ..examples import mlp

    epochs, max_steps = (1, 20) if args.quick else (args.epochs, None)
    result = mlp.train(epochs=epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                       activation=args.activation, max_steps=max_steps, progress=not args.no_progress,
                       devices=args.devices)
    return _report(mlp, result, args)


def _cnn(args) -> int:
    from ..examples import cnn

    epochs, max_steps = (1, 20) if args.quick else (args.epochs, None)
    result = cnn.train(epochs=epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                       channels=args.channels, max_steps=max_steps, progress=not args.no_progress)
    return _report(cnn, result, args)


def _transformer(args) -> int:
    from ..examples import transformer

    epochs, max_steps = (1, 60) if args.quick else (args.epochs, None)
    result = transformer.train(task=args.task, epochs=epochs, batch_size=args.batch_size, learning_rate=args.lr,
                               seed=args.seed, d_model=args.d_model, heads=args.heads, max_steps=max_steps,
                               progress=not args.no_progress)
    return _report(transformer, result, args)


def _newton(args) -> int:
    from ..examples import newton

    steps = 20 if args.quick else args.steps
    result = newton.train(problem=args.problem, steps=steps, seed=args.seed)
    return _report(newton, result, args, "loss curve")
