"""Structure rules of src/: short functions with few parameters (the layering and repeated code
are checked by `make lint`: import-linter and pylint's duplicate-code check)."""

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


# The house rule outside cli/ (the command functions take one parameter per option): functions
# of at most 60 lines and 8 parameters, every one of them.
HOUSE_LINES, HOUSE_PARAMETERS = 60, 8


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, methods as Class.method."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Parameters a caller passes: every named, *args and **kwargs one, less self or cls."""
    a = node.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    count = len(names) + (a.vararg is not None) + (a.kwarg is not None)
    return count - bool(names and names[0].arg in ("self", "cls"))


def house_offenders() -> tuple[set[str], set[str]]:
    long, many = set(), set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/"):
            continue
        for name, node in _functions(ast.parse(path.read_text())):
            if node.end_lineno - node.lineno + 1 > HOUSE_LINES:
                long.add(f"{rel}::{name}")
            if parameter_count(node) > HOUSE_PARAMETERS:
                many.add(f"{rel}::{name}")
    return long, many


def test_the_parameter_count_leaves_out_self_and_counts_star_arguments() -> None:
    tree = ast.parse("class A:\n    def m(self, a, *b, c, **d):\n        pass\n")
    [(name, node)] = list(_functions(tree))
    assert name == "A.m" and parameter_count(node) == 4


def test_no_function_outside_cli_over_60_lines_or_8_parameters() -> None:
    long, many = house_offenders()
    assert not long, f"over {HOUSE_LINES} lines, split them: {sorted(long)}"
    assert not many, f"over {HOUSE_PARAMETERS} parameters, bundle them: {sorted(many)}"
