"""The order grammar: parse an order string into plan nodes, and write a plan back as a string.

Factors are ``J1`` (nearest the input) … ``JN``, written in product order (later factors left)::

    order    := "forward" | "reverse" | "optimal" | expr | expr expr      (outer parentheses optional)
    expr     := factor                         materialise one factor (JAC)
              | "(" expr expr ")"              multiply two sub-products (MUL)
              | "tan(" factors ")"             tangent accumulation from unit vectors (TAN)
              | "tan(" factors "|" expr ")"    push expr's columns through factors' JVP rules
              | "adj(" factors ")"             adjoint accumulation from unit vectors (ADJ)
              | "adj(" expr "|" factors ")"    pull expr's rows back through factors' VJP rules
    factors  := factor+ (consecutive, descending) | factor ".." factor
    factor   := "J" n | "J" n "[" order (";" order)* "]"

A block's factor (``Residual``, ``Parallel``, a nested ``Chain``) may name the order of each of its
chains in brackets: ``"J3[reverse] J2..J1"`` is invalid (a product needs brackets) but
``"(J3[reverse] tan(J2 J1))"`` materialises J3's body by reverse accumulation; ``J2[forward;
optimal]`` names both branches of a ``Parallel``. Without brackets, a block's Jacobian comes
from its chains' own optimal plans.

Examples: ``"(J3 (J2 J1))"``, ``"tan(J4..J1)"`` (= forward), ``"adj(J5 | (J4 J3) J2 J1)"`` is
invalid (not a factor list after ``|``) while ``"adj(J5 | J4..J1)"`` pulls the rows of J5 back.
"""
from __future__ import annotations

import re

from ._costs import FMA
from ._model import Model
from ._nodes import Node

__all__ = ["parse_order"]

_TOKEN = re.compile(r"\s*(?:(?P<factor>[Jj]\d+)|(?P<word>[A-Za-z_]\w*)|(?P<range>\.\.)|(?P<punct>[()|\[\];])|(?P<bad>\S))")


def _tokenize(text):
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace left
            break
        kind = m.lastgroup
        start = m.start(kind)
        tokens.append((kind, m.group(kind), start))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, model: Model):
        self.text, self.model, self.n = text, model, model.n
        self.tokens = _tokenize(text)
        self.i = 0
        self.factors = "J1" if self.n == 1 else f"J1..J{self.n}"  # as written in messages

    # ---- errors --------------------------------------------------------------------------
    def error(self, message, pos=None):
        pos = len(self.text) if pos is None else pos
        raise ValueError(f"invalid order {self.text!r}: {message} at position {pos}\n"
                         f"    {self.text}\n    {' ' * pos}^")

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else (None, None, len(self.text))

    def take(self, kind=None, value=None, what=None):
        tok = self.peek()
        if tok[0] is None:
            self.error(f"expected {what or value or kind}, but the order ends")
        if (kind and tok[0] != kind) or (value and tok[1] != value):
            self.error(f"expected {what or value or kind}, found {tok[1]!r}", tok[2])
        self.i += 1
        return tok

    # ---- grammar ---------------------------------------------------------------------------
    def parse(self) -> Node:
        if not self.tokens:
            self.error("empty order", 0)
        first = self.parse_expr()
        if self.peek()[0] is not None:  # "J3 (J2 J1)": outer parentheses left out
            second = self.parse_expr()
            first = self.product(first, second, self.tokens[0][2])
        tok = self.peek()
        if tok[0] is not None:
            if tok[1] == ")":
                self.error("unbalanced parentheses: ')' closes nothing", tok[2])
            self.error(f"unexpected {tok[1]!r} after a complete product (a product takes exactly two "
                       f"factors: bracket it, e.g. '(J3 (J2 J1))')", tok[2])
        if (first.lo, first.hi) != (1, self.n):
            missing = [f"J{i}" for i in range(1, self.n + 1) if not first.lo <= i <= first.hi]
            self.error(f"missing factor(s) {', '.join(missing)}: the order must cover {self.factors}", 0)
        return first

    def parse_expr(self) -> Node:
        kind, value, pos = self.peek()
        if kind == "factor":
            self.i += 1
            i = self.factor_index(value, pos)
            if self.peek()[1] == "[":
                return self.model.jac(i, self.parse_inner(i))
            return self.model.jac(i)
        if kind == "punct" and value == "(":
            self.i += 1
            left = self.parse_expr()
            if self.peek()[0] is None:  # "((J2 J1)": say which '(' is open, not just "order ends"
                self.error(f"unbalanced parentheses: '(' at position {pos} is never closed")
            if self.peek()[1] == ")":
                self.error("a bracket must hold exactly two sub-products, found one", self.peek()[2])
            right = self.parse_expr()
            tok = self.peek()
            if tok[0] is None:
                self.error("unbalanced parentheses: '(' at position %d is never closed" % pos)
            if tok[1] != ")":
                self.error(f"a bracket must hold exactly two sub-products; found a third, {tok[1]!r} "
                           f"(write e.g. '((J3 J2) J1)')", tok[2])
            self.i += 1
            return self.product(left, right, pos)
        if kind == "word" and value.lower() in ("tan", "adj"):
            self.i += 1
            return self.parse_mode(value.lower(), pos)
        if kind == "word":
            if value.lower() in ("forward", "reverse", "optimal"):
                self.error(f"{value!r} names a whole order and cannot be part of a bracketing", pos)
            self.error(f"unknown word {value!r} (expected a factor {self.factors}, '(', 'tan(' or 'adj(')", pos)
        if kind is None:
            self.error("expected a factor or '(', but the order ends")
        if value == ")":
            self.error("unbalanced parentheses: ')' closes nothing", pos)
        self.error(f"unexpected {value!r} (expected a factor {self.factors}, '(', 'tan(' or 'adj(')", pos)

    def parse_mode(self, mode, pos) -> Node:
        self.take("punct", "(", what=f"'(' after {mode!r}")
        if mode == "tan":
            lo_hi = self.parse_factors()
            seed = None
            if self.peek()[1] == "|":
                bar = self.take()
                seed = self.parse_expr()
                if seed.hi + 1 != lo_hi[0]:
                    self.error(f"the seed after '|' must end just before J{lo_hi[0]} (it covers "
                               f"J{seed.hi}..J{seed.lo})", bar[2])
            self.close(pos)
            lo = seed.lo if seed else lo_hi[0]
            return self.model.tan(lo, lo_hi[1], seed)
        # adj: either "adj(factors)" or "adj(expr | factors)"
        start = self.i
        if self.peek()[0] == "factor":
            lo_hi = self.parse_factors()
            if self.peek()[1] != "|":
                self.close(pos)
                return self.model.adj(*lo_hi)
            self.i = start  # a factor list before '|' is a seed of JAC/MUL steps: re-read as expr
        seed = self.parse_expr()
        bar = self.take("punct", "|", what="'|' (adj(SEED | FACTORS))")
        lo_hi = self.parse_factors()
        if lo_hi[1] + 1 != seed.lo:
            self.error(f"the factors after '|' must end just before J{seed.lo}, where the seed starts", bar[2])
        self.close(pos)
        return self.model.adj(lo_hi[0], seed.hi, seed)

    def parse_inner(self, i) -> tuple:
        """``[order; order …]`` after block factor ``J{i}``: one plan per chain of the block."""
        from ._plan import _cached_plan
        _, _, open_pos = self.take("punct", "[")
        layer, chains = self.model.layers[i - 1], self.model.block_plans[i]
        if not chains:
            self.error(f"J{i} ({layer!r}) is not a block: only Residual, Parallel and Chain factors take "
                       f"an inner order in brackets", open_pos)
        parts, start, depth = [], open_pos + 1, 0
        while True:
            kind, value, pos = self.peek()
            if kind is None:
                self.error(f"unbalanced brackets: '[' at position {open_pos} is never closed")
            self.i += 1
            if value == "[":
                depth += 1
            elif value == "]" and depth:
                depth -= 1
            elif value in ("]", ";") and not depth:
                parts.append((self.text[start:pos].strip(), start))
                start = pos + 1
                if value == "]":
                    break
        if len(parts) != len(chains):
            self.error(f"J{i} ({layer!r}) has {len(chains)} chain(s), so its brackets need {len(chains)} "
                       f"order(s) separated by ';', found {len(parts)}", open_pos)
        plans = []
        for (text, at), default in zip(parts, chains):
            chain = _block_chain(layer, self.model.shapes[i - 1], len(plans))
            try:
                plans.append(_cached_plan(chain, text or "optimal", 1, FMA))
            except ValueError as err:
                self.error(f"J{i}'s inner order {text!r} (from position {at}) is invalid for {chain!r}: "
                           f"{str(err).splitlines()[0]}", at)
        return tuple(plans)

    def close(self, pos):
        tok = self.peek()
        if tok[0] is None:
            self.error(f"unbalanced parentheses: '(' at position {pos} is never closed")
        if tok[1] != ")":
            self.error(f"expected ')' or '|', found {tok[1]!r}", tok[2])
        self.i += 1

    def parse_factors(self) -> tuple[int, int]:
        """A descending run of consecutive factors; returns (lo, hi)."""
        kind, value, pos = self.take("factor", what="a factor such as J3")
        hi = last = self.factor_index(value, pos)
        if self.peek()[0] == "range":
            self.i += 1
            _, value, pos = self.take("factor", what="a factor after '..'")
            lo = self.factor_index(value, pos)
            if lo > hi:
                self.error(f"a range runs from the later factor down: write J{lo}..J{hi}", pos)
            return lo, hi
        while self.peek()[0] == "factor":
            _, value, pos = self.take()
            i = self.factor_index(value, pos)
            if i != last - 1:
                self.factor_order_error(i, last, pos)
            last = i
        return last, hi

    def factor_index(self, token, pos) -> int:
        i = int(token[1:])
        if not 1 <= i <= self.n:
            self.error(f"unknown factor {token!r}: this chain has {'only factor' if self.n == 1 else 'factors'} "
                       f"{self.factors}", pos)
        return i

    def factor_order_error(self, i, previous, pos):
        if i == previous:
            self.error(f"factor J{i} repeated", pos)
        if i > previous:
            self.error(f"factor J{i} out of product order: later factors stand to the left "
                       f"(J{i} must come before J{previous})", pos)
        self.error(f"J{i} does not follow J{previous}: factor(s) {_span(i + 1, previous - 1)} missing", pos)

    def product(self, left: Node, right: Node, pos) -> Node:
        if right.hi + 1 != left.lo:
            overlap = max(left.lo, right.lo) <= min(left.hi, right.hi)
            if overlap:
                rep = max(left.lo, right.lo)
                self.error(f"factor J{rep} repeated", pos)
            if right.lo > left.hi:
                self.error(f"factors out of product order: {_span(right.lo, right.hi)} must stand to the "
                           f"left of {_span(left.lo, left.hi)}", pos)
            self.error(f"factor(s) {_span(right.hi + 1, left.lo - 1)} missing between "
                       f"J{left.lo} and J{right.hi}", pos)
        return self.model.mul(left, right)


def _block_chain(layer, in_shape, k):
    """Chain k of a composite layer bound to ``in_shape`` (a nested Chain is its own only chain)."""
    return layer.inner_chains(tuple(in_shape))[k]


def _span(a, b) -> str:
    """Factors a..b as written in messages: ``J2`` or ``J4..J2``."""
    return f"J{a}" if a == b else f"J{b}..J{a}"


def parse_order(text: str, model: Model) -> Node:
    """Parse a bracketing / tan / adj order string for a chain with ``model.n`` factors."""
    if not isinstance(text, str):
        raise TypeError(f"order must be a string or a Plan, got {type(text).__name__}")
    return _Parser(text, model).parse()
