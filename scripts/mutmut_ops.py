"""`mutmut` with one more mutation operator: statement deletion.

mutmut's own operators change expressions (numbers, strings, operators, arguments) but never
delete a statement, so a test suite that never notices a missing `permit.release()`,
`gate.refund(...)` or `self.depth -= 1` passes for it. This adds one operator: a simple
statement line that is a call (`f(x)`, `await f(x)`) or an assignment (`x = ...`, `x += ...`,
`x: T = ...`) is replaced by `pass`. Docstrings and other bare expressions are left alone.

Used by scripts/mutation.py exactly like the `mutmut` command (`python scripts/mutmut_ops.py
run ...`); the operator list is patched before mutmut parses anything, and its workers are
forked from this process, so they see the same list.
"""

from __future__ import annotations

from collections.abc import Iterable

import libcst as cst
from mutmut.mutation import mutators


def operator_delete_statement(node: cst.SimpleStatementLine) -> Iterable[cst.CSTNode]:
    """`pass` in place of a line that is one call or one assignment."""
    if len(node.body) != 1:
        return
    statement = node.body[0]
    if isinstance(statement, cst.Expr):
        value = statement.value
        if isinstance(value, cst.Await):
            value = value.expression
        if not isinstance(value, cst.Call):
            return
    elif isinstance(statement, cst.AnnAssign):
        if statement.value is None:
            return
    elif not isinstance(statement, cst.Assign | cst.AugAssign):
        return
    yield node.with_changes(body=[cst.Pass()])


def install() -> None:
    """Add the operator to the list mutmut's visitor reads (once)."""
    operators = mutators.mutation_operators
    entry = (cst.SimpleStatementLine, operator_delete_statement)
    if entry not in operators:
        assert isinstance(operators, list)
        operators.append(entry)


if __name__ == "__main__":
    install()
    from mutmut.__main__ import cli

    cli()
