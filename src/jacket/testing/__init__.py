"""The rule checker: a layer's hand-written rules against JAX autodiff and finite differences.

Signatures::

    check_layer(layer, params=None, x=None, *, key=None, in_dim=None, dtype=None, atol=None, rtol=None)
        -> Report        raises RuleError (an AssertionError carrying the Report) on any mismatch
    check_chain(chain, params=None, x=None, *, key=None, dtype=None, atol=None, rtol=None) -> Report
    layer_test(*layers, in_dim=None, dtypes=("float32", "float64"))  -> a parametrised pytest test

What is compared, for one example ``(n,)`` and for a batch ``(3, n)`` when ``x`` is not given:

=====================  ================================================================
rule                   reference
=====================  ================================================================
jvp                    ``jax.jvp`` of ``apply``: x_dot alone, each params leaf alone
                       (x_dot=None), both together
vjp                    ``jax.vjp`` of ``apply``: x_bar, each leaf of params_bar (summed
                       over the batch)
transpose              the layer's own jvp: ⟨ȳ, J ẋ⟩ = ⟨Jᵀȳ, ẋ⟩, for x and each params leaf
jacobian               ``jax.jacfwd`` at one example; ``jacobian_structure(n)`` (shape, kind)
finite-differences     central differences of ``apply`` in float64, no autodiff at all
=====================  ================================================================

If JAX cannot differentiate ``apply`` (it calls numpy, or ``jax.pure_callback``), finite
differences become the reference for jvp, vjp and jacobian, and the report says so.
Parameters come from ``layer.init(key)``, with each constant leaf (a scale of ones, an offset
of zeros) spread around its value, since at scale 1 and offset 0 a rule that drops those terms
would pass. Inputs are standard normal: a ReLU-like kink at 0 is almost never within the
finite-difference step of one. Tolerances depend on the dtype (``TOLERANCES``); ``atol``/``rtol``
replace those of the autodiff comparisons and can only loosen those of finite differences,
whose own truncation error does not shrink on request.

One line in a test file checks every layer of a project, in float32 and float64::

    test_my_layers = jacket.testing.layer_test(Sine(), Scale(4), in_dim=4)
"""
from __future__ import annotations

from ._cases import BATCH, TOLERANCES  # noqa: F401 - BATCH: public, outside __all__ as before
from ._cases import _cast, _given_case, _keys, _random_cases, _resolve_dtype, _spread, _tolerances, _x64_for
from ._compare import _check_cases
from ._compiled import _ChainRules, _Subject, _tape
from ._report import Report, Row, RuleError, _raise_if_failed

__all__ = ["check_layer", "check_chain", "layer_test", "parametrize_layers", "Report", "Row", "RuleError",
           "TOLERANCES"]


def check_layer(layer, params=None, x=None, *, key=None, in_dim=None, dtype=None, atol=None, rtol=None) -> Report:
    """Check ``layer``'s jvp, vjp and jacobian rules (module docstring) at ``params`` (default
    ``layer.init(key)``) and ``x`` (default: random, one example and a batch). Returns the
    :class:`Report`, or raises :class:`RuleError` naming the layer, rule, argument, case and worst element."""
    dtype = _resolve_dtype(dtype, x, params)
    with _x64_for(dtype):
        key, rng = _keys(key)
        params = _cast(_spread(layer.init(key), rng) if params is None else params, dtype)
        if x is None:
            required = layer.required_in_dim()
            if in_dim is not None and required is not None and int(in_dim) != required:
                raise ValueError(f"check_layer: {layer!r} takes width {required}, but in_dim={in_dim} was given")
            if required is None and in_dim is None:
                raise ValueError(f"check_layer: {layer!r} takes inputs of any width (required_in_dim() is None); "
                                 f"pass in_dim= or x=")
            cases = _random_cases(rng, required or int(in_dim), dtype)
        else:
            cases = [_given_case(x, dtype, "check_layer")]
        report = Report()
        _check_cases(_Subject(repr(layer), layer), params, cases, rng, _tolerances(dtype, rtol, atol), report)
    return _raise_if_failed(report)


def check_chain(chain, params=None, x=None, *, key=None, dtype=None, atol=None, rtol=None) -> Report:
    """Check ``Chain.jvp`` / ``Chain.vjp`` of the whole chain against JAX, then every layer with
    :func:`check_layer`'s comparisons at the chain's own activations; a failure names the first
    bad layer, counted from 1 as in ``Chain``'s messages."""
    dtype = _resolve_dtype(dtype, x, params)
    with _x64_for(dtype):
        key, rng = _keys(key)
        params = _cast(_spread(chain.init(key, dtype), rng) if params is None else tuple(params), dtype)
        cases = _random_cases(rng, chain.dims[0], dtype) if x is None else [_given_case(x, dtype, "check_chain")]
        tols = _tolerances(dtype, rtol, atol)
        report = Report()
        _check_cases(_Subject("chain", _ChainRules(chain)), params, cases, rng, tols, report, per_leaf=False)
        tapes = [_tape(chain, params, xx) for _, xx in cases]
        for i, (layer, p) in enumerate(zip(chain.layers, params), 1):
            _check_cases(_Subject(f"layer {i}: {layer!r}", layer), p,
                         [(case, tape[i - 1]) for (case, _), tape in zip(cases, tapes)], rng, tols, report)
    if report.passed:
        return report
    bad_layers = [r.layer for r in report.failures if r.layer != "chain"]
    _raise_if_failed(report, f"{chain!r}: first bad layer is {bad_layers[0]}" if bad_layers else
                     f"{chain!r}: the chain's rules disagree with JAX, yet every layer passes at its activations")


def parametrize_layers(*layers, dtypes=("float32", "float64")):
    """``pytest.mark.parametrize("layer, dtype", …)`` over layers × dtypes, ids from the reprs."""
    import pytest  # only tests need it
    return pytest.mark.parametrize("layer, dtype", [pytest.param(layer, d, id=f"{layer!r}-{d}")
                                                    for layer in layers for d in dtypes])


def layer_test(*layers, in_dim=None, dtypes=("float32", "float64"), **options):
    """A test function running :func:`check_layer` on every layer and dtype. Assign it to a
    module-level name starting with ``test``: ``test_my_layers = layer_test(Sine(), in_dim=4)``.
    ``in_dim`` is used for layers that take any width; ``options`` go to check_layer."""
    @parametrize_layers(*layers, dtypes=dtypes)
    def test_layer_rules(layer, dtype):
        check_layer(layer, in_dim=in_dim if layer.required_in_dim() is None else None, dtype=dtype, **options)
    return test_layer_rules
