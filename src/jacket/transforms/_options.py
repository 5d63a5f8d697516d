"""What every function of the front door checks and resolves, written once: the kind of each
argument, ``argnums``, and the options spelled the same everywhere (``order``, ``cost``,
``chunk``, ``checkpoint``, ``memory_limit``, ``mesh``). Options are checked when the transform is
made (``jacket.jacobian(chain, …)``), before any array exists; arrays when its function is called."""
from __future__ import annotations

import numbers

__all__ = ["as_chain", "check_loss", "check_argnums", "resolve_cost", "check_chunk", "check_checkpoint",
           "check_memory_limit", "check_mesh", "check_order"]

ARGNUMS = {0: "the parameters", 1: "the input x"}


def as_chain(fun, where):
    """``fun`` as a :class:`~jacket.Chain`: a Chain as it is, a single layer with a fixed input
    shape as a one-layer chain (``(chain, True)`` then: its params are the layer's, not a tuple)."""
    from ..compose import Chain
    from ..core import Layer
    from ..losses import Loss
    if isinstance(fun, Chain):
        if not fun.bound:
            fun.in_shape  # noqa: B018 - raises the clear message about the missing in_shape
        return fun, False
    if isinstance(fun, Layer):
        shape = fun.input_shape()
        if shape is None:
            raise ValueError(f"{where}: {fun!r} takes inputs of any shape: wrap it in a chain with its shape, "
                             f"jacket.Chain([{fun!r}], in_shape=…)")
        return Chain([fun], in_shape=shape), True
    if isinstance(fun, Loss):
        raise TypeError(f"{where}: {fun!r} is a loss, not a chain: pass the chain first and the loss second, "
                        f"as jacket.value_and_grad(chain, loss)")
    if isinstance(fun, type):
        raise TypeError(f"{where}: got the class {fun.__name__}, not an instance: write {fun.__name__}(…)")
    if callable(fun):
        raise TypeError(f"{where}: takes a jacket.Chain (or a jacket layer); a plain function "
                        f"({getattr(fun, '__name__', type(fun).__name__)}) is not supported yet: use jax.jacfwd / "
                        f"jax.jacrev for it, or write it as a Chain of layers")
    raise TypeError(f"{where}: takes a jacket.Chain, got {type(fun).__name__}")


def check_loss(loss, where):
    from ..core import Layer
    from ..losses import Loss
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        raise TypeError(f"{where}: got the class {loss.__name__}, not a loss: write {loss.__name__}()")
    if isinstance(loss, Layer):
        raise TypeError(f"{where}: its second argument must be a jacket.Loss, got the layer {loss!r} (a layer "
                        f"belongs in the chain)")
    raise TypeError(f"{where}: its second argument must be a jacket.Loss (e.g. jacket.SoftmaxCrossEntropy()), "
                    f"got {loss!r}")


def check_argnums(argnums, where) -> tuple[tuple[int, ...], bool]:
    """``(argnums as a tuple, whether one was given as an int)``: 0 (the params), 1 (the input)
    or a tuple of them, as ``jax.jacfwd`` takes them for a function of ``(params, x)``."""
    def valid(n):
        return isinstance(n, numbers.Integral) and not isinstance(n, bool) and int(n) in ARGNUMS
    if valid(argnums):
        return (int(argnums),), True
    if isinstance(argnums, (tuple, list)) and argnums and all(valid(n) for n in argnums) \
            and len(set(argnums)) == len(argnums):
        return tuple(int(n) for n in argnums), False
    raise ValueError(f"{where}: argnums must be 0 (the parameters), 1 (the input x) or a tuple of them, as for "
                     f"a function of (params, x); got {argnums!r}")


def resolve_cost(cost, where):
    """``"fma"`` (or ``None``), ``"calibrated"`` (this device's cached rates, measured first when
    there are none), a ``Rates`` or a ``CostModel``: resolved once, here, so that planning itself
    never measures."""
    from ..planning import FMA, CalibratedCost, CostModel, Rates
    if cost is None or (isinstance(cost, str) and cost.strip().lower() == "fma"):
        return FMA
    if isinstance(cost, CostModel):
        return cost
    if isinstance(cost, Rates):
        return CalibratedCost(cost)
    if isinstance(cost, str) and cost.strip().lower() == "calibrated":
        from ..tuning import rates_for
        return CalibratedCost(rates_for())
    raise ValueError(f"{where}: cost must be 'fma', 'calibrated', a jacket.planning.Rates or a CostModel, "
                     f"got {cost!r}")


def check_chunk(chunk, where):
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1):
        raise ValueError(f"{where}: chunk must be a positive number of seed vectors or None, got {chunk!r}")
    return None if chunk is None else int(chunk)


def check_checkpoint(checkpoint, where, boundaries_allowed=False):
    """A checkpoint schedule as ``jacket.checkpointing.schedule`` takes it (validated on a long
    enough chain here; again on the real one when it runs)."""
    if checkpoint is None:
        return None
    from ..checkpointing import schedule
    allowed = (str, int, tuple) + ((list,) if boundaries_allowed else ())
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, allowed):
        raise ValueError(f"{where}: checkpoint must be None, 'sqrt', 'two-level', ('binomial', B) or a positive "
                         f"number of segments{', or a list of boundaries' if boundaries_allowed else ''}; got "
                         f"{checkpoint!r}")
    if isinstance(checkpoint, (str, int)) or (isinstance(checkpoint, tuple) and checkpoint[:1] == ("binomial",)):
        try:
            schedule(64, checkpoint)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    elif not boundaries_allowed:
        raise ValueError(f"{where}: checkpoint must be None, 'sqrt', 'two-level', ('binomial', B) or a positive "
                         f"number of segments; got {checkpoint!r}")
    return checkpoint


def check_memory_limit(memory_limit, where):
    if memory_limit is None:
        return None
    from ..planning import parse_bytes
    return parse_bytes(memory_limit, f"{where}: memory_limit")


def check_mesh(mesh, where, count_allowed=False):
    """``None``, a ``jax.sharding.Mesh``, or (``count_allowed``: for plans) a number of devices."""
    if mesh is None:
        return None
    from jax.sharding import Mesh
    if isinstance(mesh, Mesh):
        return mesh
    if count_allowed and isinstance(mesh, numbers.Integral) and not isinstance(mesh, bool) and mesh >= 1:
        return int(mesh)
    extra = " or a number of devices" if count_allowed else ""
    raise TypeError(f"{where}: mesh must be a jax.sharding.Mesh (jacket.make_mesh()){extra}, got {mesh!r}")


def check_order(order, where):
    from ..planning import Plan
    if isinstance(order, (str, Plan)):
        return order
    raise TypeError(f"{where}: order must be a string ('optimal', 'forward', 'reverse', 'fastest', a bracketing) "
                    f"or a Plan from jacket.plan, got {type(order).__name__}")
