"""Command help as paragraphs, not as the docstring's lines.

Typer's rich help keeps every line break after the first paragraph, so a docstring wrapped
at 96 columns reads ragged in an 80-column terminal. Each paragraph becomes one line here
(list items and indented lines keep theirs) and rich wraps it at the terminal's width.
"""

from __future__ import annotations

import inspect
import re

import typer

_ITEM = re.compile(r"^(?:[-*] |\d+[.)] )")


def unwrap(text: str) -> str:
    """`text` with each paragraph (and each list item) joined into one line; indented lines
    (examples) and click's no-rewrap paragraphs (starting with \\b) stay as written."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(_unwrap_paragraph(p) for p in paragraphs)


def _unwrap_paragraph(paragraph: str) -> str:
    if paragraph.startswith("\b"):
        return paragraph
    lines: list[str] = []
    for line in paragraph.splitlines():
        if lines and _continues(lines[-1], line):
            lines[-1] = f"{lines[-1]} {line.strip()}"
        else:
            lines.append(line)
    return "\n".join(lines)


def _continues(previous: str, line: str) -> bool:
    """Whether `line` goes on with `previous`: plain text after plain text or a list item,
    an indented line only after a list item (else it is an example and keeps its line)."""
    if _ITEM.match(line) or previous.startswith(" "):
        return False
    return not line.startswith(" ") or bool(_ITEM.match(previous))


def unwrap_commands(app: typer.Typer) -> None:
    """Every command's help (its `help=` or docstring) in `app` and its sub-apps, unwrapped."""
    for info in app.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if text:
            info.help = unwrap(text)
    for group in app.registered_groups:
        if group.help:
            group.help = unwrap(group.help)
        if group.typer_instance is not None:
            unwrap_commands(group.typer_instance)


def flags_without_a_type() -> None:
    """Typer's rich help shows `<bool>` beside a flag (`--onnx`, `--help`) as if it took a
    value; show no type for flags, as click's plain help does."""
    import typer.core

    option = typer.core.TyperOption
    if getattr(option.display_type_rich, "_skinclf", False):
        return
    shown = option.display_type_rich

    def display_type_rich(self, ctx):
        if self.is_flag and not self.count:
            return None
        return shown(self, ctx)

    display_type_rich._skinclf = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich
