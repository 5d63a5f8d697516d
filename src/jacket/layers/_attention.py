"""Multi-head self-attention over a sequence ``(T, d_model)``, with hand-written product rules.

Forward, per head ``h`` (``d_head = d_model / heads``, ``c = 1/sqrt(d_head)``)::

    Q = x wq + bq,  K = x wk + bk,  V = x wv + bv      (T, d_model), split into (heads, T, d_head)
    S = c Q Kᵀ            (heads, T, T), keys after the query masked to -inf when causal
    A = softmax(S)        over the keys (the last axis)
    O = A V               merged back to (T, d_model)
    y = O wo + bo

The rules recompute ``Q, K, V, S, A`` from ``x`` and ``params`` and differentiate that chain by
the product rule; the softmax step calls :class:`Softmax`'s own rules, so its Jacobian
``diag(a) - a aᵀ`` is written once in the library. The second-order rule ``vjp_jvp`` applies the
product rule once more, to each (bilinear) step of ``vjp``, with Softmax's ``vjp_jvp``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..core import Footprint, Layer, positive_int, size
from ..core._checks import check_array
from ._activations import Softmax

__all__ = ["MultiHeadSelfAttention"]

_SOFTMAX = Softmax()


def _add(*terms):
    """The sum of the terms that are not None (a symbolic zero); None if all are."""
    present = [t for t in terms if t is not None]
    return sum(present[1:], present[0]) if present else None


def _lead_sum(a, keep):
    """Sum over every leading axis (batch, positions) but the last ``keep``: a bias's cotangent."""
    return a.reshape((-1,) + a.shape[a.ndim - keep:]).sum(axis=0)


class MultiHeadSelfAttention(Layer):
    """Self-attention with ``heads`` heads on ``x`` of shape ``(T, d_model)`` or ``(B, T, d_model)``
    (a batch: ``x.ndim == 3``); ``y`` has the shape of ``x``. ``T`` is free.

    Params ``{"wq", "wk", "wv", "wo": (d_model, d_model), "bq", "bk", "bv", "bo": (d_model,)}``.
    With ``causal=True`` position ``t`` attends to positions ``s <= t`` only (masked weights are 0).
    The Jacobian with respect to one example is dense, ``(T·d_model, T·d_model)``.
    """

    symbolic_zeros = True

    def __init__(self, d_model: int, heads: int, causal: bool = False):
        self.d_model = positive_int(d_model, "MultiHeadSelfAttention d_model")
        self.heads = positive_int(heads, "MultiHeadSelfAttention heads")
        if self.d_model % self.heads:
            raise ValueError(f"MultiHeadSelfAttention: d_model ({self.d_model}) must be divisible by "
                             f"heads ({self.heads})")
        self.causal = bool(causal)

    def __repr__(self):
        return f"MultiHeadSelfAttention({self.d_model}, {self.heads}{', causal=True' if self.causal else ''})"

    @property
    def d_head(self) -> int:
        return self.d_model // self.heads

    def init(self, key):
        d = self.d_model
        keys = jax.random.split(key, 4)
        scale = 1 / jnp.sqrt(jnp.float32(d))  # LeCun normal: variance 1/fan_in
        params = {f"w{n}": jax.random.normal(k, (d, d), jnp.float32) * scale for n, k in zip("qkvo", keys)}
        params.update({f"b{n}": jnp.zeros((d,), jnp.float32) for n in "qkvo"})
        return params

    def output_shape(self, in_shape):
        in_shape = tuple(in_shape)
        if len(in_shape) != 2 or in_shape[-1] != self.d_model:
            raise ValueError(f"{self!r} takes one example of shape (T, {self.d_model}), got shape {in_shape}")
        return in_shape

    # ---- forward pieces, shared by apply and the rules ------------------------------------
    def _check(self, x):
        x = check_array(x, repr(self))
        if x.ndim not in (2, 3) or x.shape[-1] != self.d_model:
            raise ValueError(f"{self!r}: x has shape {tuple(x.shape)}, but must be (T, {self.d_model}) "
                             f"or (batch, T, {self.d_model})")
        return x

    # Heads are kept head-major, (…, H, T, d_head): a weight (d, d) is read as (d, H, d_head) or
    # (H, d_head, d) by a reshape (free), so every product below is one dot_general over the
    # arrays as stored: no `.T` of a weight (see Dense.vjp on XLA CPU) and no head transposes.
    def _in_w(self, w):
        return w.reshape(self.d_model, self.heads, self.d_head)

    def _out_w(self, w):
        return w.reshape(self.heads, self.d_head, self.d_model)

    def _to_heads(self, a, w, b=None):
        """``a w (+ b)`` split into heads: (…, T, d) -> (…, H, T, d_head)."""
        out = jnp.einsum("...td,dhk->...htk", a, self._in_w(w))
        return out if b is None else out + b.reshape(self.heads, 1, self.d_head)

    def _from_heads(self, o, w):
        """Heads merged and projected: (…, H, T, d_head) @ w -> (…, T, d)."""
        return jnp.einsum("...htk,hkd->...td", o, self._out_w(w))

    def _mask(self, s, fill):
        """Keys after the query set to ``fill`` (-inf for scores, 0 for their tangents). Every row
        keeps its diagonal, so its max is finite and exp(-inf - max) = 0 exactly; the mask is a
        select, whose derivative zeroes the masked entries instead of multiplying by infinity."""
        if not self.causal:
            return s
        t = s.shape[-1]
        keep = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
        return jnp.where(keep, s, jnp.asarray(fill, s.dtype))

    def _qk(self, q, k):
        """``Q Kᵀ`` per head: (…, H, T, d_head) × 2 -> (…, H, T, T)."""
        return jnp.einsum("...htk,...hsk->...hts", q, k)

    @staticmethod
    def _attend(a, v):
        """``A V`` per head: (…, H, T, T), (…, H, T, d_head) -> (…, H, T, d_head)."""
        return jnp.einsum("...hts,...hsk->...htk", a, v)

    def _forward(self, params, x):
        """The intermediates ``(Q, K, V, S, A)``, head-major."""
        q, k, v = (self._to_heads(x, params[f"w{n}"], params[f"b{n}"]) for n in "qkv")
        s = self._mask(self._qk(q, k) * (1 / math.sqrt(self.d_head)), -jnp.inf)
        return q, k, v, s, _SOFTMAX.apply({}, s)

    def apply(self, params, x):
        x = self._check(x)
        *_, v, _, a = self._forward(params, x)
        return self._from_heads(self._attend(a, v), params["wo"]) + params["bo"]

    # ---- rules ------------------------------------------------------------------------------
    def _projection_dot(self, params, x, x_dot, params_dot, n):
        """Tangent of ``x w_n + b_n`` in heads: x_dot w + x w_dot + b_dot, skipping absent terms."""
        out = None if x_dot is None else self._to_heads(x_dot, params[f"w{n}"])
        if params_dot is not None:
            from_params = self._to_heads(x, params_dot[f"w{n}"], params_dot[f"b{n}"])
            out = from_params if out is None else out + from_params
        return out

    def jvp(self, params, x, y, x_dot, params_dot=None):
        if x_dot is None and params_dot is None:
            return None
        q, k, v, s, a = self._forward(params, x)
        q_dot, k_dot, v_dot = (self._projection_dot(params, x, x_dot, params_dot, n) for n in "qkv")
        # S is bilinear in (Q, K): S_dot = c (Q_dot Kᵀ + Q K_dotᵀ); the mask is constant, so the
        # masked tangents are 0 (and A = 0 there, so Softmax's rule keeps them 0).
        s_dot = self._mask(self._qk(q_dot, k) + self._qk(q, k_dot), 0) * (1 / math.sqrt(self.d_head))
        a_dot = _SOFTMAX.jvp({}, s, a, s_dot)
        o_dot = self._attend(a_dot, v) + self._attend(a, v_dot)  # O = A V is bilinear too
        y_dot = self._from_heads(o_dot, params["wo"])
        if params_dot is not None:
            y_dot = y_dot + self._from_heads(self._attend(a, v), params_dot["wo"]) + params_dot["bo"]
        return y_dot

    def _scores_vjp(self, s_bar, q, k):
        """Cotangents of Q and K from that of ``S = c Q Kᵀ`` (head-major)."""
        s_bar = s_bar * (1 / math.sqrt(self.d_head))  # common to both terms: applied once, to S_bar
        return (jnp.einsum("...hts,...hsk->...htk", s_bar, k), jnp.einsum("...hts,...htk->...hsk", s_bar, q))

    def vjp(self, params, x, y, y_bar):
        d = self.d_model
        q, k, v, s, a = self._forward(params, x)
        o = self._attend(a, v)
        # y = merge(O) wo + bo: wo_bar = merge(O)ᵀ y_bar (summed over batch and positions)
        params_bar = {"wo": jnp.einsum("...htk,...td->hkd", o, y_bar).reshape(d, d), "bo": _lead_sum(y_bar, 1)}
        o_bar = jnp.einsum("...td,hkd->...htk", y_bar, self._out_w(params["wo"]))
        # O = A V: A_bar = O_bar Vᵀ, V_bar = Aᵀ O_bar (per head)
        a_bar = self._qk(o_bar, v)
        v_bar = jnp.einsum("...hts,...htk->...hsk", a, o_bar)
        # Softmax's rule gives S_bar = A ⊙ (A_bar - ⟨A, A_bar⟩), already 0 where A is masked;
        # the mask's own transpose zeroes those entries all the same (they are constants).
        s_bar = self._mask(_SOFTMAX.vjp({}, s, a, a_bar)[1], 0)
        q_bar, k_bar = self._scores_vjp(s_bar, q, k)
        x_bar = None
        for n, bar in zip("qkv", (q_bar, k_bar, v_bar)):
            params_bar[f"w{n}"] = jnp.einsum("...td,...htk->dhk", x, bar).reshape(d, d)
            params_bar[f"b{n}"] = _lead_sum(bar.sum(axis=-2), 2).reshape(d)
            back = jnp.einsum("...htk,dhk->...td", bar, self._in_w(params[f"w{n}"]))
            x_bar = back if x_bar is None else x_bar + back
        return params_bar, x_bar

    # ---- second order -----------------------------------------------------------------------
    def _softmax_vjp_jvp(self, s, a, a_bar, s_dot, a_dot, a_bar_dot):
        """Tangent of Softmax's vjp ``S_bar = A ⊙ (A_bar - ⟨A_bar, A⟩)`` (last axis, A = softmax(S))
        when S moves by ``s_dot`` (A by ``a_dot``) and A_bar by ``a_bar_dot`` (None: zero), i.e.
        ``a_dot ⊙ (A_bar - ⟨A_bar, A⟩) + A ⊙ (a_bar_dot - ⟨a_bar_dot, A⟩ - ⟨A_bar, a_dot⟩)``:
        Softmax's own ``vjp_jvp``, so that rule is written once in the library."""
        return _SOFTMAX.vjp_jvp({}, s, a, a_bar, s_dot, None, a_dot, a_bar_dot)[1]

    def vjp_jvp(self, params, x, y, y_bar, x_dot, params_dot, y_dot, y_bar_dot):
        """Tangent of :meth:`vjp`: every step of it is a product (bilinear), so each cotangent's
        tangent is the sum of the step with one factor replaced by its tangent; the forward
        tangents (Q_dot … O_dot) are recomputed as in :meth:`jvp` (``y_dot`` is not needed).
        None tangents drop their terms (a cotangent left without terms is zeros); ``(None, None)``
        when all three are None."""
        if x_dot is None and params_dot is None and y_bar_dot is None:
            return None, None
        d, c = self.d_model, 1 / math.sqrt(self.d_head)
        mul = lambda f, u, v: None if u is None or v is None else f(u, v)  # noqa: E731  (None: a zero)
        q, k, v, s, a = self._forward(params, x)
        o = self._attend(a, v)
        # forward tangents, as in jvp
        forward = x_dot is not None or params_dot is not None
        q_dot, k_dot, v_dot = ((self._projection_dot(params, x, x_dot, params_dot, n) for n in "qkv")
                               if forward else (None, None, None))
        s_dot = a_dot = o_dot = None
        if forward:
            s_dot = self._mask(self._qk(q_dot, k) + self._qk(q, k_dot), 0) * c
            a_dot = _SOFTMAX.jvp({}, s, a, s_dot)
            o_dot = self._attend(a_dot, v) + self._attend(a, v_dot)
        wo_dot = None if params_dot is None else params_dot["wo"]
        # the vjp's cotangents, reused by the product rule
        o_bar = jnp.einsum("...td,hkd->...htk", y_bar, self._out_w(params["wo"]))
        a_bar = self._qk(o_bar, v)
        s_bar = self._mask(_SOFTMAX.vjp({}, s, a, a_bar)[1], 0)
        # wo_bar = Σ O ⊗ y_bar, bo_bar = Σ y_bar
        wo_rule = lambda o_, yb: jnp.einsum("...htk,...td->hkd", o_, yb).reshape(d, d)  # noqa: E731
        bar_dot = {"wo": _add(mul(wo_rule, o_dot, y_bar), mul(wo_rule, o, y_bar_dot)),
                   "bo": None if y_bar_dot is None else _lead_sum(y_bar_dot, 1)}
        # O_bar = y_bar woᵀ
        o_bar_rule = lambda yb, w: jnp.einsum("...td,hkd->...htk", yb, self._out_w(w))  # noqa: E731
        o_bar_dot = _add(mul(o_bar_rule, y_bar_dot, params["wo"]), mul(o_bar_rule, y_bar, wo_dot))
        # A_bar = O_bar Vᵀ, V_bar = Aᵀ O_bar
        a_bar_dot = _add(mul(self._qk, o_bar_dot, v), mul(self._qk, o_bar, v_dot))
        v_rule = lambda a_, ob: jnp.einsum("...hts,...htk->...hsk", a_, ob)  # noqa: E731
        v_bar_dot = _add(mul(v_rule, a_dot, o_bar), mul(v_rule, a, o_bar_dot))
        # S_bar = mask(softmax_vjp(A, A_bar))
        s_bar_dot = self._softmax_vjp_jvp(s, a, a_bar, s_dot, a_dot, a_bar_dot)
        s_bar_dot = None if s_bar_dot is None else self._mask(s_bar_dot, 0)
        # (Q_bar, K_bar) = c (S_bar K, S_barᵀ Q): bilinear in S_bar and (Q, K)
        from_s = (None, None) if s_bar_dot is None else self._scores_vjp(s_bar_dot, q, k)
        q_bar_dot = _add(from_s[0], mul(lambda sb, kd: self._scores_vjp(sb, q, kd)[0], s_bar, k_dot))
        k_bar_dot = _add(from_s[1], mul(lambda sb, qd: self._scores_vjp(sb, qd, k)[1], s_bar, q_dot))
        # w_n_bar = Σ x ⊗ n_bar, b_n_bar = Σ n_bar, x_bar = Σ_n n_bar w_nᵀ
        v_bar = v_rule(a, o_bar)
        q_bar, k_bar = self._scores_vjp(s_bar, q, k)
        w_rule = lambda x_, bar: jnp.einsum("...td,...htk->dhk", x_, bar).reshape(d, d)  # noqa: E731
        back = lambda bar, w: jnp.einsum("...htk,dhk->...td", bar, self._in_w(w))  # noqa: E731
        x_bar_dot = None
        for n, bar, bar_dot_n in zip("qkv", (q_bar, k_bar, v_bar), (q_bar_dot, k_bar_dot, v_bar_dot)):
            bar_dot[f"w{n}"] = _add(mul(w_rule, x_dot, bar), mul(w_rule, x, bar_dot_n))
            bar_dot[f"b{n}"] = None if bar_dot_n is None else _lead_sum(bar_dot_n.sum(axis=-2), 2).reshape(d)
            w_dot = None if params_dot is None else params_dot[f"w{n}"]
            x_bar_dot = _add(x_bar_dot, mul(back, bar_dot_n, params[f"w{n}"]), mul(back, bar, w_dot))
        params_bar_dot = {name: jnp.zeros_like(params[name], dtype=x.dtype) if value is None else value
                          for name, value in bar_dot.items()}
        return params_bar_dot, jnp.zeros_like(x) if x_bar_dot is None else x_bar_dot

    # ---- cost declaration (fma, one example (T, d_model), one tangent) ----------------------
    def jvp_cost(self, in_shape):
        # 3 T d² (Q_dot, K_dot, V_dot) + 2 T² d (Q_dot Kᵀ + Q K_dotᵀ) + H T² (the scale c)
        # + 2 H T² (Softmax's rule) + 2 T² d (A_dot V + A V_dot) + T d² (the output projection).
        # The causal mask is a select (no multiplications); the masked half is still computed.
        t, d = self.output_shape(in_shape)
        return 4 * t * d * d + 4 * t * t * d + 3 * self.heads * t * t

    def vjp_cost(self, in_shape):
        # The transposes, step by step: T d² (O_bar) + 2 T² d (A_bar, V_bar) + 2 H T² (Softmax)
        # + H T² (c) + 2 T² d (Q_bar, K_bar) + 3 T d² (x_bar): the same count.
        return self.jvp_cost(in_shape)

    def footprint(self, in_shape):
        """Reads x (Q, K, V and the scores are recomputed from it); per vector q, k, v, their
        tangents and the scores, one vector once (fitted to XLA's CPU buffer assignment)."""
        n = size(in_shape)
        return Footprint(reads={"x"}, tangent=(6 * n, n), adjoint=(6 * n, n))
