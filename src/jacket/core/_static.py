"""Objects configured by static values only: equal and hashed by type and attributes, so that
layers, losses and chains can be static arguments of ``jax.jit``."""
from __future__ import annotations

__all__ = ["Static"]


class Static:
    """Equality, hashing and repr from ``vars(self)``: ints, floats, strings, tuples only;
    arrays belong in params."""

    def _config(self) -> tuple:
        return tuple(sorted(vars(self).items()))

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._config() == other._config()

    def __hash__(self) -> int:
        try:
            return hash((type(self), self._config()))
        except TypeError as err:
            raise TypeError(f"{type(self).__name__} is not hashable: it may hold only static configuration "
                            f"(ints, floats, strings, tuples), arrays go in params ({err})") from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"
