"""Structure rules of src/: short functions (the layering and repeated code are checked by
`make lint`: import-linter and pylint's duplicate-code check)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "skinclf"
MAX_FUNCTION_LINES = 80


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than `limit` lines, decorators excluded."""
    return [
        (node.name, node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit
    ]


def test_the_check_finds_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", MAX_FUNCTION_LINES + 1)]
    assert long_functions("def g():\n    return 1\n") == []


def test_no_function_in_src_is_longer_than_80_lines() -> None:
    found = [
        f"{path.relative_to(SRC.parent)}: {name} ({n} lines)"
        for path in sorted(SRC.rglob("*.py"))
        for name, n in long_functions(path.read_text())
    ]
    assert not found, "split these functions:\n" + "\n".join(found)
