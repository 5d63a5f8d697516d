"""``jacket train logistic | mlp``: the classic backpropagation examples, runnable.

``logistic``: logistic regression on the breast-cancer data, the engine's gradient checked
against the closed form Xᵀ(p − y)/N and jax.grad at every step (jacket/examples/logistic.py).
``mlp``: Dense(64,32)–Tanh–Dense(32,10) on the 8×8 digits with optax.adam; prints
``test accuracy: 0.xxxx`` last and saves the loss/accuracy curve (jacket/examples/mlp.py).
Both need the ``examples`` extra (scikit-learn for the data, matplotlib for the plot).
"""
from __future__ import annotations

import sys

HELP = "train the backprop examples: logistic regression (breast cancer) or an MLP (digits)"

DEFAULT_PLOT = "jacket-train-mlp.png"


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
    mlp.add_argument("--epochs", type=int, default=30, help="passes over the training split (default 30)")
    mlp.add_argument("--batch-size", type=int, default=32, help="mini-batch size (default 32)")
    mlp.add_argument("--lr", type=float, default=1e-2, help="optax.adam learning rate (default 0.01)")
    mlp.add_argument("--seed", type=int, default=0, help="split, initial weights and shuffles (default 0)")
    mlp.add_argument("--activation", choices=("tanh", "sigmoid"), default="tanh", help="hidden activation")
    mlp.add_argument("--plot", metavar="PATH", default=DEFAULT_PLOT,
                     help=f"where to save the loss/accuracy curve PNG (default ./{DEFAULT_PLOT})")
    mlp.add_argument("--no-plot", action="store_true", help="don't save the curve")
    mlp.add_argument("--no-progress", action="store_true", help="no progress bar; print one line per epoch")
    mlp.add_argument("--quick", action="store_true", help="one epoch of at most 20 steps, for smoke tests")
    mlp.add_argument("--devices", type=int, default=None, metavar="N",
                     help="data-parallel over N devices (on a CPU, simulate them with "
                          "XLA_FLAGS=--xla_force_host_platform_device_count=N)")


def run(args) -> int:
    try:
        if args.example == "logistic":
            return _logistic(args)
        return _mlp(args)
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


def _mlp(args) -> int:
    from ..examples import mlp

    epochs, max_steps = (1, 20) if args.quick else (args.epochs, None)
    result = mlp.train(epochs=epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                       activation=args.activation, max_steps=max_steps, progress=not args.no_progress,
                       devices=args.devices)
    if not args.no_plot:
        try:
            mlp.save_plot(result, args.plot)
            print(f"saved the loss/accuracy curve to {args.plot}")
        except (ImportError, OSError) as err:
            print(f"not saving the curve: {err}", file=sys.stderr)
    print(mlp.format_report(result))
    return 0
