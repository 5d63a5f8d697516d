"""The rule checker: a layer's hand-written rules against JAX autodiff and finite differences.

Signatures::

    check_layer(layer, params=None, x=None, *, key=None, in_shape=None, dtype=None, atol=None, rtol=None,
                batch=True) -> Report        raises RuleError (an AssertionError carrying the Report) on any mismatch
    check_chain(chain, params=None, x=None, *, key=None, dtype=None, atol=None, rtol=None) -> Report
    layer_test(*layers, in_shape=None, dtypes=("float32", "float64"))  -> a parametrised pytest test

What is compared, for one example of ``in_shape`` and for a batch ``(3,) + in_shape`` when ``x``
is not given (``in_shape``: the layer's ``input_shape()`` unless given, e.g. ``(T, d)``):

=====================  ================================================================
rule                   reference
=====================  ================================================================
jvp                    ``jax.jvp`` of ``apply``: x_dot alone, each params leaf alone
                       (x_dot=None), both together
vjp                    ``jax.vjp`` of ``apply``: x_bar, each leaf of params_bar (summed
                       over the batch)
transpose              the layer's own jvp: ⟨ȳ, J ẋ⟩ = ⟨Jᵀȳ, ẋ⟩, for x and each params leaf
jacobian               ``jax.jacfwd`` at one example; ``jacobian_structure(in_shape)``
finite-differences     central differences of ``apply`` in float64, no autodiff at all
vjp_jvp                (only for a layer with ``has_second_order``) the tangent of ``jax.vjp``
                       of ``apply``: ``jax.jvp(lambda p, x, ȳ: jax.vjp(apply, p, x)[1](ȳ))``,
                       along x_dot, params_dot, y_bar_dot alone, then all three together
finite-differences     central differences of the layer's own ``vjp`` along (params_dot,
vjp_jvp                x_dot) plus its ``vjp(y_bar_dot)``, in float64
=====================  ================================================================

A layer without a second-order rule gets a note in the report ("no second-order rule"), not a
failure.

If JAX cannot differentiate ``apply`` (it calls numpy, or ``jax.pure_callback``), finite
differences become the reference for jvp, vjp, jacobian and vjp_jvp, and the report says so.
Parameters come from ``layer.init(key)``, with each constant leaf (a scale of ones, an offset
of zeros) spread around its value, since at scale 1 and offset 0 a rule that drops those terms
would pass. Inputs are standard normal: a ReLU-like kink at 0 is almost never within the
finite-difference step of one. Tolerances depend on the dtype (``TOLERANCES``); ``atol``/``rtol``
replace those of the autodiff comparisons and can only loosen those of finite differences,
whose own truncation error does not shrink on request.

One line in a test file checks every layer of a project, in float32 and float64::

    test_my_layers = jacket.testing.layer_test(Sine(), Scale(4), in_shape=(4,))

Rules are called as the engine calls them (``core/_tangents.py``): a rule receives zeros for an
absent tangent unless its layer opts into symbolic zeros, and results are cast to the dtypes of
their primals; so a rule written without any ``None`` handling passes.
"""
from __future__ import annotations

from ._cases import BATCH, TOLERANCES  # noqa: F401 - BATCH: public, outside __all__ as before
from ._cases import (_cast, _given_case, _keys, _layer_in_shape, _random_cases, _resolve_dtype, _spread,
                     _tolerances, _x64_for)
from ._compare import _check_cases
from ._compiled import _ChainRules, _Subject, _tape
from ._report import Report, Row, RuleError, _raise_if_failed
from ..core._checks import check_params

__all__ = ["check_layer", "check_chain", "layer_test", "parametrize_layers", "Report", "Row", "RuleError",
           "TOLERANCES"]


def check_layer(layer, params=None, x=None, *, key=None, in_shape=None, dtype=None, atol=None,
                rtol=None, batch=True) -> Report:
    """Check ``layer``'s jvp, vjp and jacobian rules, and vjp_jvp if it has one (module docstring) at ``params`` (default
    ``layer.init(key)``) and ``x`` (default: random, one example and, unless ``batch=False`` for a
    layer written for one example only, a batch). Returns the
    :class:`Report`, or raises :class:`RuleError` naming the layer, rule, argument, case and worst element."""
    _check_kind(layer, "check_layer", "layer")
    dtype = _resolve_dtype(dtype, x, params)
    with _x64_for(dtype):
        key, rng = _keys(key)
        in_shape = _layer_in_shape(layer, in_shape, x, "check_layer")
        layer = layer.bind(in_shape)  # as a Chain binds it: Flatten and blocks learn their shape
        if params is None:
            params = _spread(layer.init(key), rng)
        else:
            check_params(layer, params, "check_layer")
        params = _cast(params, dtype)
        cases = _random_cases(rng, in_shape, dtype) if x is None else [_given_case(x, in_shape, dtype, "check_layer")]
        if not batch:
            cases = cases[:1]
        report = Report()
        _check_cases(_Subject(repr(layer), layer, in_shape), params, cases, rng, _tolerances(dtype, rtol, atol),
                     report)
    return _raise_if_failed(report)


def check_chain(chain, params=None, x=None, *, key=None, dtype=None, atol=None, rtol=None) -> Report:
    """Check ``Chain.jvp`` / ``Chain.vjp`` of the whole chain against JAX, then every layer with
    :func:`check_layer`'s comparisons at the chain's own activations; a failure names the first
    bad layer, counted from 1 as in ``Chain``'s messages."""
    _check_kind(chain, "check_chain", "chain")
    dtype = _resolve_dtype(dtype, x, params)
    with _x64_for(dtype):
        key, rng = _keys(key)
        if params is not None:
            chain.check_params(params, "check_chain")
        params = _cast(_spread(chain.init(key, dtype), rng) if params is None else tuple(params), dtype)
        cases = _random_cases(rng, chain.in_shape, dtype) if x is None else \
            [_given_case(x, chain.in_shape, dtype, "check_chain")]
        tols = _tolerances(dtype, rtol, atol)
        report = Report()
        _check_cases(_Subject("chain", _ChainRules(chain), chain.in_shape), params, cases, rng, tols, report, per_leaf=False)
        _check_layers(chain, params, cases, rng, tols, report, "")
    if report.passed:
        return report
    bad_layers = [r.layer for r in report.failures if r.layer != "chain"]
    # the deepest failing layer: a bad rule inside a block also fails the block around it
    deepest = [name for name in bad_layers
               if not any(o.startswith(name.split(":")[0] + " → ") for o in bad_layers)]
    _raise_if_failed(report, f"{chain!r}: first bad layer is {deepest[0]}" if deepest else
                     f"{chain!r}: the chain's rules disagree with JAX, yet every layer passes at its activations",
                     first=deepest[0] if deepest else None)


def _check_kind(subject, where, wanted):
    """A clear TypeError unless ``subject`` is a layer (``wanted="layer"``) or a Chain."""
    from ..compose import Chain
    from ..core import Layer
    name = getattr(subject, "__name__", type(subject).__name__)
    if isinstance(subject, type):
        raise TypeError(f"{where}: got the class {name}, not an instance: write {name}(…)")
    if wanted == "chain" and isinstance(subject, Layer) and not isinstance(subject, Chain):
        raise TypeError(f"{where}: takes a jacket.Chain, got the layer {subject!r}: use check_layer({subject!r}) or "
                        f"wrap it, check_chain(jacket.Chain([{subject!r}]))")
    if not isinstance(subject, Chain if wanted == "chain" else Layer):
        raise TypeError(f"{where}: takes a jacket.{'Chain' if wanted == 'chain' else 'Layer'}, got {subject!r} ({name})")


def _check_layers(chain, params, cases, rng, tols, report, prefix):
    """Every layer of ``chain`` at the chain's own activations, then, inside every block (a nested
    Chain, a Residual, a Parallel branch), its layers at theirs; names are paths such as
    ``layer 3 → Residual → layer 2: Dense(8, 8)``."""
    tapes = [_tape(chain, params, xx) for _, xx in cases]
    for i, (layer, p) in enumerate(zip(chain.layers, params), 1):
        inputs = [(case, tape[i - 1]) for (case, _), tape in zip(cases, tapes)]
        _check_cases(_Subject(f"{prefix}layer {i}: {layer!r}", layer, chain.shapes[i - 1]), p, inputs, rng, tols,
                     report)
        for (name, inner), inner_params in zip(layer.named_chains(), layer.split_params(p)):  # a composite
            _check_layers(inner, inner_params, inputs, rng, tols, report, f"{prefix}layer {i} → {name} → ")


def parametrize_layers(*layers, dtypes=("float32", "float64")):
    """``pytest.mark.parametrize("layer, dtype", …)`` over layers × dtypes, ids from the reprs."""
    import pytest  # only tests need it
    return pytest.mark.parametrize("layer, dtype", [pytest.param(layer, d, id=f"{layer!r}-{d}")
                                                    for layer in layers for d in dtypes])


def layer_test(*layers, in_shape=None, dtypes=("float32", "float64"), **options):
    """A test function running :func:`check_layer` on every layer and dtype. Assign it to a
    module-level name starting with ``test``: ``test_my_layers = layer_test(Sine(), in_shape=(4,))``.
    ``in_shape`` is used for layers that take any shape; ``options`` go to check_layer."""
    @parametrize_layers(*layers, dtypes=dtypes)
    def test_layer_rules(layer, dtype):
        check_layer(layer, in_shape=in_shape if layer.input_shape() is None else None, dtype=dtype, **options)
    return test_layer_rules
