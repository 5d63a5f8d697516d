"""The checker's results: one :class:`Row` per comparison, gathered in a :class:`Report`
(``str(report)`` is a table), and :class:`RuleError` raised with the report on any failure."""
from __future__ import annotations

from dataclasses import dataclass, field

from .._table import format_table

_HEADERS = ("layer", "case", "rule", "argument", "reference", "max error", "tolerance", "pass")


@dataclass(frozen=True)
class Row:
    """One comparison: ``max_error`` of the rule against ``reference``, and whether it is within ``tolerance``."""

    layer: str
    case: str
    rule: str
    argument: str
    reference: str
    max_error: float
    tolerance: float
    passed: bool
    detail: str = ""

    def describe(self) -> str:
        text = (f"{self.layer}: rule {self.rule}, argument {self.argument}, case {self.case}: "
                f"max error {self.max_error:.3g} > tolerance {self.tolerance:.3g}")
        return text + (f"; {self.detail}" if self.detail else "") + f" (reference: {self.reference})"


@dataclass
class Report:
    """All comparisons of one check; ``str(report)`` is a table, followed by notes."""

    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list:
        return [r for r in self.rows if not r.passed]

    def __str__(self):
        rows = [(r.layer, r.case, r.rule, r.argument, r.reference, r.max_error, r.tolerance, r.passed)
                for r in self.rows]
        return "\n".join([format_table(_HEADERS, rows)] + self.notes)


class RuleError(AssertionError):
    """A rule disagrees with its reference; ``.report`` holds every comparison."""

    def __init__(self, message, report):
        super().__init__(message)
        self.report = report


def _raise_if_failed(report, lead=None, first=None):
    """Raise :class:`RuleError` if any row failed; the rows of layer ``first`` are described first."""
    bad = report.failures
    if first is not None:
        bad = [r for r in bad if r.layer == first] + [r for r in bad if r.layer != first]
    if not bad:
        return report
    lines = ([lead] if lead else []) + [bad[0].describe()]
    if len(bad) > 1:
        lines += ["other failures:"] + ["  " + r.describe() for r in bad[1:]]
    raise RuleError("\n".join(lines + report.notes), report)
