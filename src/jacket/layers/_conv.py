"""Image layers on channel-first inputs: convolutions (``Conv1D``, ``Conv2D``) and pooling
(``AvgPool2D``, ``MaxPool2D``), with hand-written rules.

Layout: one example is ``(C, L)`` (1-D) or ``(C, H, W)`` (2-D); a batch has a leading axis
``(B, C, …)``. The rules work on the batched form (a single example gets a batch axis of 1).

Along one spatial axis of size ``n``, with kernel ``k``, stride ``s`` and padding ``(lo, hi)``,
the forward map is ``y[o] = Σ_j w[j] x[o·s + j - lo]`` for ``o < m = (n + lo + hi - k)//s + 1``.
Its transpose puts ``y_bar[o]`` back at ``o·s + j - lo``: a stride-1 convolution of ``y_bar``
dilated by ``s`` with the flipped kernel, padded by ``k-1-lo`` in front and ``n+lo-(m-1)s-1``
behind. The second pad also covers the last ``(n + lo + hi - k) mod s`` entries that the
strided forward never reads: they get zero cotangent, and x_bar has exactly x's shape.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core import Footprint, Layer, positive_int, size
from ..core._checks import check_array
from ..operators import Matrix

__all__ = ["Conv1D", "Conv2D", "AvgPool2D", "MaxPool2D"]


def _tuple(value, nd, what):
    """An int or a sequence of ``nd`` ints as a tuple of positive ints."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * nd
    if len(values) != nd:
        raise ValueError(f"{what} must be an int or {nd} ints, got {value!r}")
    return tuple(positive_int(v, what) for v in values)


def _padding(padding, nd, what):
    """``"SAME"``, ``"VALID"`` or ``nd`` pairs ``(lo, hi)`` of non-negative ints."""
    if isinstance(padding, str) and padding.upper() in ("SAME", "VALID"):
        return padding.upper()
    try:
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        pairs = ()
    if len(pairs) != nd or any(p < 0 for pair in pairs for p in pair) or isinstance(padding, str):
        raise ValueError(f"{what} must be 'SAME', 'VALID' or {nd} pairs (lo, hi) of non-negative ints, "
                         f"got {padding!r}")
    return pairs


def _pads(padding, sizes, kernel, stride):
    """Explicit ``(lo, hi)`` per spatial axis (``"SAME"`` as in ``lax``: out = ceil(n/s))."""
    if padding == "VALID":
        return tuple((0, 0) for _ in sizes)
    if padding != "SAME":
        return padding
    pads = []
    for n, k, s in zip(sizes, kernel, stride):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _out_sizes(sizes, kernel, stride, pads):
    return tuple((n + lo + hi - k) // s + 1 for n, k, s, (lo, hi) in zip(sizes, kernel, stride, pads))


def _shown(values):
    return values[0] if len(set(values)) == 1 else values


def _by_sweeps(layer, x, y, tangent, cotangent):
    """The Jacobian at one example from the cheaper side: unit tangents through ``tangent``
    (columns) or unit cotangents through ``cotangent`` (rows), as ``jacobian_cost`` says."""
    n_in, n_out = x.size, y.size
    if n_out * layer.vjp_cost(x.shape) < n_in * layer.jvp_cost(x.shape):
        units = jnp.eye(n_out, dtype=y.dtype).reshape((n_out,) + y.shape)
        return Matrix(jax.vmap(cotangent)(units).reshape(n_out, n_in).astype(y.dtype))
    units = jnp.eye(n_in, dtype=x.dtype).reshape((n_in,) + x.shape)
    return Matrix.transpose_of(jax.vmap(tangent)(units).reshape(n_in, n_out).astype(y.dtype))


class _Spatial(Layer):
    """Shared by the image layers: ``nd`` spatial axes after a channel axis, optional batch."""

    nd = 2
    symbolic_zeros = True
    channels = None  # required channel count, or None (pooling: any)

    def _layout(self):
        spatial = ("L",) if self.nd == 1 else ("H", "W")
        return ", ".join((str(self.channels) if self.channels else "C",) + spatial)

    def _geometry(self, spatial):
        pads = _pads(self._padding(), spatial, self.kernel, self.stride)
        return pads, _out_sizes(spatial, self.kernel, self.stride, pads)

    def _padding(self):
        return "VALID"

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != self.nd + 1 or (self.channels and in_shape[0] != self.channels):
            raise ValueError(f"{self!r} takes inputs of shape ({self._layout()}) (channels first), "
                             f"got {in_shape}")
        _, out = self._geometry(in_shape[1:])
        if min(out) < 1:
            raise ValueError(f"{self!r} needs an image of at least {'×'.join(map(str, self.kernel))} "
                             f"(with its padding), got {'×'.join(map(str, in_shape[1:]))}")
        return (self.out_channels if self.channels else in_shape[0],) + out

    def _check(self, x):
        x = check_array(x, repr(self))
        shape = tuple(x.shape)
        if x.ndim not in (self.nd + 1, self.nd + 2):
            raise ValueError(f"{self!r}: x has shape {shape}, but must have shape ({self._layout()}) "
                             f"(one example) or (batch, {self._layout()})")
        try:
            self.output_shape(shape[-self.nd - 1:])
        except ValueError as err:
            raise ValueError(f"{self!r}: x has shape {shape}: {err}") from None
        return x

    def _batched(self, a):
        return a if a.ndim == self.nd + 2 else a[None]

    def _like(self, a, x):
        return a if x.ndim == self.nd + 2 else a[0]


class _Conv(_Spatial):
    """Shared by ``Conv1D`` and ``Conv2D``; ``nd`` spatial axes."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="SAME", bias=True):
        name = type(self).__name__
        self.in_channels = positive_int(in_channels, f"{name} in_channels")
        self.out_channels = positive_int(out_channels, f"{name} out_channels")
        self.kernel = _tuple(kernel_size, self.nd, f"{name} kernel_size")
        self.stride = _tuple(stride, self.nd, f"{name} stride")
        self.padding = _padding(padding, self.nd, f"{name} padding")
        self.bias = bool(bias)

    @property
    def channels(self):
        return self.in_channels

    def __repr__(self):
        extra = "" if self.stride == (1,) * self.nd else f", stride={_shown(self.stride)}"
        extra += "" if self.padding == "SAME" else f", padding={self.padding!r}"
        extra += "" if self.bias else ", bias=False"
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, {_shown(self.kernel)}{extra})"

    def _padding(self):
        return self.padding

    def _specs(self, lhs="NC", rhs="OI", out="NC"):
        spatial = "HW"[-self.nd:]
        return lhs + spatial, rhs + spatial, out + spatial

    def init(self, key):
        # LeCun normal: variance 1/fan_in with fan_in = in_channels · kernel area.
        shape = (self.out_channels, self.in_channels) + self.kernel
        w = jax.random.normal(key, shape, jnp.float32) / float(np.sqrt(self.in_channels * size(self.kernel)))
        params = {"w": w}
        if self.bias:
            params["b"] = jnp.zeros((self.out_channels,), jnp.float32)
        return params

    def _forward(self, w, xb):
        """The convolution of a batch ``xb`` with ``w`` (no bias), in xb's dtype."""
        pads, _ = self._geometry(xb.shape[2:])
        return lax.conv_general_dilated(xb, w.astype(xb.dtype), self.stride, pads,
                                        dimension_numbers=self._specs())

    def _bias(self, b, y):
        return b.astype(y.dtype).reshape((-1,) + (1,) * self.nd)

    def apply(self, params, x):
        x = self._check(x)
        y = self._forward(params["w"], self._batched(x))
        return self._like(y + self._bias(params["b"], y) if self.bias else y, x)

    def jvp(self, params, x, y, x_dot, params_dot=None):
        # d(w * x + b) = w * x_dot + w_dot * x + b_dot (either tangent may be None: a symbolic zero)
        xb = self._batched(x)
        y_dot = None if x_dot is None else self._forward(params["w"], self._batched(x_dot).astype(x.dtype))
        if params_dot is not None:
            from_w = self._forward(params_dot["w"], xb)
            y_dot = from_w if y_dot is None else y_dot + from_w
            if self.bias:
                y_dot = y_dot + self._bias(params_dot["b"], y_dot)
        return self._like(y_dot, x)

    def _x_bar(self, w, x_shape, y_bar):
        """The transposed convolution (module docstring): flipped kernel with in/out swapped,
        ``y_bar`` dilated by the stride, pads that give back exactly ``x_shape``."""
        spatial = x_shape[2:]
        pads, out = self._geometry(spatial)
        back = tuple((k - 1 - lo, n + lo - (m - 1) * s - 1)
                     for n, k, s, (lo, _), m in zip(spatial, self.kernel, self.stride, pads, out))
        flipped = jnp.flip(w.astype(y_bar.dtype), axis=tuple(range(2, 2 + self.nd))).swapaxes(0, 1)
        return lax.conv_general_dilated(y_bar, flipped, (1,) * self.nd, back, lhs_dilation=self.stride,
                                        dimension_numbers=self._specs())

    def _w_bar(self, xb, yb):
        """w_bar[o, c, j] = Σ_{b, p} y_bar[b, o, p] x[b, c, p·s + j - lo]: a correlation of x with
        y_bar dilated by the stride, the batch axis contracted as the "feature" axis (specs
        below), cropped behind (negative pad) to the entries the forward read. Both batched."""
        pads, out = self._geometry(xb.shape[2:])
        crop = tuple((lo, k + (m - 1) * s - n - lo)
                     for n, k, s, (lo, _), m in zip(xb.shape[2:], self.kernel, self.stride, pads, out))
        return lax.conv_general_dilated(xb, yb, (1,) * self.nd, crop, rhs_dilation=self.stride,
                                        dimension_numbers=self._specs("CN", "IO", "CN"))

    def _b_bar(self, yb):
        return yb.sum(axis=(0,) + tuple(range(2, 2 + self.nd)))

    def vjp(self, params, x, y, y_bar):
        xb, yb = self._batched(x), self._batched(y_bar).astype(x.dtype)
        params_bar = {"w": self._w_bar(xb, yb)}
        if self.bias:
            params_bar["b"] = self._b_bar(yb)
        return params_bar, self._like(self._x_bar(params["w"], xb.shape, yb), x)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        # The vjp is bilinear: x_bar = convT(w, y_bar), w_bar = corr(x, y_bar), b_bar = Σ y_bar, so
        # x_bar_dot = convT(w_dot, y_bar) + convT(w, y_bar_dot), w_bar_dot = corr(x_dot, y_bar)
        # + corr(x, y_bar_dot), b_bar_dot = Σ y_bar_dot (y_dot unused). A None tangent drops its
        # terms (a side left without terms is zeros); all three None: (None, None).
        if x_dot is None and params_dot is None and y_bar_dot is None:
            return None, None
        xb, yb = self._batched(x), self._batched(y_bar).astype(x.dtype)
        ybd = None if y_bar_dot is None else self._batched(y_bar_dot).astype(x.dtype)
        x_terms = ([] if params_dot is None else [self._x_bar(params_dot["w"], xb.shape, yb)]) + \
                  ([] if ybd is None else [self._x_bar(params["w"], xb.shape, ybd)])
        w_terms = ([] if x_dot is None else [self._w_bar(self._batched(x_dot).astype(x.dtype), yb)]) + \
                  ([] if ybd is None else [self._w_bar(xb, ybd)])
        x_bar_dot = self._like(sum(x_terms[1:], x_terms[0]), x) if x_terms else jnp.zeros_like(x)
        params_bar_dot = {"w": sum(w_terms[1:], w_terms[0]) if w_terms
                          else jnp.zeros(params["w"].shape, x.dtype)}
        if self.bias:
            params_bar_dot["b"] = (jnp.zeros((self.out_channels,), x.dtype) if ybd is None
                                   else self._b_bar(ybd))
        return params_bar_dot, x_bar_dot

    def jacobian(self, params, x, y):
        return _by_sweeps(self, x, y, lambda e: self.jvp(params, x, y, e, None),
                          lambda e: self._x_bar(params["w"], (1,) + x.shape, e[None].astype(x.dtype))[0])

    def jvp_cost(self, in_shape):
        return size(self.output_shape(in_shape)) * self.in_channels * size(self.kernel)

    def jacobian_cost(self, in_shape):
        return min(size(in_shape), size(self.output_shape(in_shape))) * self.jvp_cost(in_shape)

    def footprint(self, in_shape):
        """Linear in x; the VJP transposes the layout of both sides per vector (read off XLA's CPU
        buffer assignment); the bias is never read by the input-Jacobian rules."""
        n, m = size(in_shape), size(self.output_shape(in_shape))
        return Footprint(reads=(), adjoint=(n + m, 0), unread_params=self.out_channels if self.bias else 0)


class Conv1D(_Conv):
    """1-D convolution (cross-correlation, as ``lax``) on ``(C, L)`` or ``(B, C, L)``.
    Params ``{"w": (out_channels, in_channels, k), "b": (out_channels,)}``; padding ``"SAME"``
    (output length ``ceil(L/stride)``), ``"VALID"`` or ``((lo, hi),)``."""

    nd = 1


class Conv2D(_Conv):
    """2-D convolution (cross-correlation, as ``lax``) on ``(C, H, W)`` or ``(B, C, H, W)``.

    Params ``{"w": (out_channels, in_channels, kh, kw), "b": (out_channels,)}``. ``kernel_size``
    and ``stride``: an int or a pair. ``padding``: ``"SAME"`` (output ``ceil(H/sh) × ceil(W/sw)``),
    ``"VALID"`` (no padding) or ``((top, bottom), (left, right))``. Output
    ``(out_channels, H_out, W_out)``. Jacobian: dense, built from unit vectors on the smaller side.
    """

    nd = 2


class _Pool2D(_Spatial):
    """Pooling over ``window`` (int or pair) with ``stride`` (default: the window), no padding,
    on ``(C, H, W)`` or ``(B, C, H, W)`` with any channel count. No parameters."""

    def __init__(self, window, stride=None):
        name = type(self).__name__
        self.kernel = _tuple(window, 2, f"{name} window")
        self.stride = self.kernel if stride is None else _tuple(stride, 2, f"{name} stride")

    def __repr__(self):
        extra = "" if self.stride == self.kernel else f", stride={_shown(self.stride)}"
        return f"{type(self).__name__}({_shown(self.kernel)}{extra})"

    def _windows(self, a):
        """The ``kh·kw`` strided slices of ``a`` (batched): slice ``(i, j)`` holds entry ``(i, j)``
        of every window, so a window-wise reduction is elementwise across the slices."""
        _, out = self._geometry(a.shape[2:])
        (sh, sw), (mh, mw) = self.stride, out
        return [lax.slice(a, (0, 0, i, j), a.shape[:2] + (i + (mh - 1) * sh + 1, j + (mw - 1) * sw + 1),
                          (1, 1, sh, sw)) for i in range(self.kernel[0]) for j in range(self.kernel[1])]

    def _scatter(self, parts, x_shape):
        """Transpose of ``_windows``: slice ``(i, j)`` back to rows ``i, i+sh, …`` and columns
        ``j, j+sw, …`` (zeros between and after), overlaps summed."""
        (h, w), (sh, sw) = x_shape[2:], self.stride
        x_bar = jnp.zeros(x_shape, parts[0].dtype)
        for (i, j), part in zip(np.ndindex(*self.kernel), parts):
            mh, mw = part.shape[2:]
            config = ((0, 0, 0), (0, 0, 0), (i, h - i - (mh - 1) * sh - 1, sh - 1),
                      (j, w - j - (mw - 1) * sw - 1, sw - 1))
            x_bar = x_bar + lax.pad(part, np.zeros((), part.dtype), config)
        return x_bar

    def jvp_cost(self, in_shape):
        return size(self.output_shape(in_shape)) * size(self.kernel)

    def jacobian(self, params, x, y):
        return _by_sweeps(self, x, y, lambda e: self.jvp(params, x, y, e), lambda e: self.vjp(params, x, y, e)[1])

    def jacobian_cost(self, in_shape):
        out = size(self.output_shape(in_shape))
        return min(size(in_shape) * self.jvp_cost(in_shape), out * self.vjp_cost(in_shape))

    def footprint(self, in_shape):
        """Average pooling is linear in x; the VJP pads each window's part to the input's size."""
        return Footprint(reads=(), adjoint=(size(in_shape), 0))


class AvgPool2D(_Pool2D):
    """Mean over each ``window`` (int or pair), moved by ``stride`` (default: the window; windows
    may overlap). ``(C, H, W) -> (C, (H-kh)//sh + 1, (W-kw)//sw + 1)``; rows and columns past the
    last full window are dropped (zero cotangent). Jacobian: dense."""

    def _pool(self, a):
        return self._like(sum(self._windows(self._batched(a))) / size(self.kernel), a)

    def apply(self, params, x):
        return self._pool(self._check(x))

    def jvp(self, params, x, y, x_dot, params_dot=None):
        return self._pool(x_dot.astype(x.dtype))  # linear: the pool of the tangent

    def vjp(self, params, x, y, y_bar):
        # each output spreads y_bar / (kh·kw) over its window
        part = self._batched(y_bar).astype(x.dtype) / size(self.kernel)
        return {}, self._like(self._scatter([part] * size(self.kernel), self._batched(x).shape), x)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        # the vjp is linear in y_bar and independent of x: x_bar_dot = vjp at y_bar_dot (0 if None)
        return {}, jnp.zeros_like(x) if y_bar_dot is None else self.vjp(params, x, y, y_bar_dot)[1]


class MaxPool2D(_Pool2D):
    """Maximum over each ``window`` (int or pair), moved by ``stride`` (default: the window;
    windows may overlap). Shapes as :class:`AvgPool2D`. Tangents and cotangents flow through the
    maximising entry of each window; on a tie it is the first in row-major order within the
    window, and ``apply`` selects that same entry, so JAX's derivative of ``apply`` agrees."""

    def _best(self, xb):
        """Per window, its first maximum and that entry's index (row-major in the window).
        A running strict ``>`` over the slices: elementwise selects, no gather or argmax."""
        parts = self._windows(xb)
        best, choice = parts[0], jnp.zeros(parts[0].shape, jnp.int32)
        for k, part in enumerate(parts[1:], 1):
            better = part > best
            best, choice = jnp.where(better, part, best), jnp.where(better, k, choice)
        return best, choice

    def apply(self, params, x):
        x = self._check(x)
        return self._like(self._best(self._batched(x))[0], x)

    def jvp(self, params, x, y, x_dot, params_dot=None):
        choice = self._best(self._batched(x))[1]
        parts = self._windows(self._batched(x_dot).astype(x.dtype))
        y_dot = parts[0]
        for k, part in enumerate(parts[1:], 1):
            y_dot = jnp.where(choice == k, part, y_dot)
        return self._like(y_dot, x)

    def vjp(self, params, x, y, y_bar):
        choice, yb = self._best(self._batched(x))[1], self._batched(y_bar).astype(x.dtype)
        parts = [jnp.where(choice == k, yb, 0) for k in range(size(self.kernel))]
        return {}, self._like(self._scatter(parts, self._batched(x).shape), x)

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        # piecewise linear: the choice of maximum is locally constant (almost everywhere), so x_dot
        # moves nothing and x_bar_dot = y_bar_dot scattered through the same choice (0 if None)
        return {}, jnp.zeros_like(x) if y_bar_dot is None else self.vjp(params, x, y, y_bar_dot)[1]

    def footprint(self, in_shape):
        """Reads x (which entry of each window is the maximum); the VJP pads a selection to the
        input's size per vector."""
        return Footprint(reads={"x"}, adjoint=(size(in_shape), 0))

    def jvp_cost(self, in_shape):
        return size(self.output_shape(in_shape))  # one selected entry per output
