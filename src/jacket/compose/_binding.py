"""Binding a chain's layers to the shapes they receive, and finding the layers without a
second-order rule (the paths named in hvp's errors)."""
from __future__ import annotations

from ..core import as_shape

__all__ = ["missing_second_order", "require_second_order"]


# ---- second-order rules: where one is missing --------------------------------------------------
def missing_second_order(layer, prefix=""):
    """The path to the first layer without a second-order rule, such as
    ``"layer 2 → Residual → layer 1 (MyLayer())"``, or ``None`` when every layer has one."""
    from ._chain import Chain  # the class is defined after this module
    if isinstance(layer, Chain):
        for i, inner in enumerate(layer.layers, 1):
            found = missing_second_order(inner, f"{prefix}layer {i}")
            if found is not None:
                return found
        return None
    named = layer.named_chains() if hasattr(layer, "named_chains") else ()  # a plain layer: ()
    if named:  # a block: its children, by name
        for name, chain in named:
            found = missing_second_order(chain, f"{prefix} → {name} → " if prefix else f"{name} → ")
            if found is not None:
                return found
        return None
    return None if layer.has_second_order else f"{prefix} ({layer!r})" if prefix else repr(layer)


def require_second_order(layer, where):
    """A clear NotImplementedError naming the path to a layer without ``vjp_jvp``."""
    path = missing_second_order(layer)
    if path is not None:
        raise NotImplementedError(f"{where}: {path} has no second-order rule (vjp_jvp); Hessian-vector "
                                  f"products need one for every layer (jacket.ggn_vp does not)")


def _bind(layers, in_shape):
    """Each layer bound to the shape it receives: ``(bound layers, shapes)``; a clear error naming
    the first layer that cannot take its input."""
    shapes, bound = [in_shape], []
    for i, layer in enumerate(layers, 1):
        source = "the chain's input" if i == 1 else f"layer {i - 1} ({bound[-1]!r})"
        try:
            layer = layer.bind(shapes[-1])
            out = layer.output_shape(shapes[-1])
        except Exception as err:  # noqa: BLE001 - a layer's own refusal, or eval_shape's
            raise ValueError(f"Chain: layer {i} ({layer!r}) cannot take {source} of shape "
                             f"{shapes[-1]}: {err}") from err
        try:
            shapes.append(as_shape(tuple(out), f"layer {i} ({layer!r}) output shape"))
        except (TypeError, ValueError) as err:
            raise ValueError(f"Chain: layer {i} ({layer!r}) gives output shape {out!r} for input "
                             f"shape {shapes[-1]}: {err}") from None
        bound.append(layer)
    return tuple(bound), tuple(shapes)


def _fits(layers, in_shape) -> bool:
    try:
        _bind(layers, tuple(in_shape))
    except ValueError:
        return False
    return True
