"""The command-line reference (docs/cli.md), generated from the Typer app, never kept by hand.

Every command and sub-command with its usage line, its help text and a table of every argument
and option: type, default and help. `make docs` runs `python -m skinclf.cli.reference`; a test
fails when docs/cli.md differs from what this module writes.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from enum import Enum
from typing import Any

import typer
import typer.main
from rich.text import Text

from skinclf.cli import app

HEADER = """# Command-line reference

Every `skinclf` command with its usage, what it does, and each argument and option with its
type and default. Generated from the command-line app by `make docs`
(`python -m skinclf.cli.reference > docs/cli.md`); a test fails when this file is stale, so do
not edit it by hand. The settings that `key=value` arguments and `--config` files change are in
[settings.md](settings.md).
"""

_NO_DEFAULT = "(none)"
_CODE_SPAN = re.compile(r"(`[^`]*`)")
_MARKDOWN_CHARS = re.compile(r"([\\*<])")


def commands(root: Any | None = None) -> Iterator[tuple[Any, typer.Context]]:
    """Every visible command and group, depth first, each with a context naming its full path
    (e.g. `skinclf data check`)."""
    group = typer.main.get_command(app) if root is None else root
    yield from _walk(group, typer.Context(group, info_name="skinclf", **group.context_settings))


def _walk(command: Any, ctx: typer.Context) -> Iterator[tuple[Any, typer.Context]]:
    yield command, ctx
    if not hasattr(command, "list_commands"):
        return
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        sub_ctx = typer.Context(sub, parent=ctx, info_name=name, **sub.context_settings)
        yield from _walk(sub, sub_ctx)


def usage(command: Any, ctx: typer.Context) -> str:
    """The usage line, without wrapping (the terminal width must not change the file)."""
    return " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])


def _plain_help(text: str) -> str:
    """The text `--help` shows: rich markup rendered (`\\[x]` is `[x]`), nothing after `\\f`."""
    return Text.from_markup(text.partition("\f")[0]).plain


def _escape(text: str) -> str:
    """Markdown-escape prose, leaving `code spans` as they are."""
    parts = _CODE_SPAN.split(text)
    return "".join(p if p.startswith("`") else _MARKDOWN_CHARS.sub(r"\\\1", p) for p in parts)


def _cell(text: str) -> str:
    # a pipe splits a table cell even inside a code span
    return " ".join(text.split()).replace("|", "\\|")


def help_paragraphs(command: Any) -> list[str]:
    """The command's help text (its docstring), one line per paragraph."""
    text = _plain_help(inspect.cleandoc(command.help or ""))
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return [_escape(p.replace("\b", "").strip()) for p in paragraphs if p.strip()]


def param_name(param: Any) -> str:
    """`--out`, `-o` for an option (with its `--no-...` form), its name for an argument."""
    if param.param_type_name == "argument":
        name = f"`{param.metavar or param.name}`"
        return f"{name} ..." if param.nargs != 1 else name
    names = ", ".join(f"`{opt}`" for opt in param.opts)
    if param.secondary_opts:
        names += " / " + ", ".join(f"`{opt}`" for opt in param.secondary_opts)
    return names


def param_type(param: Any, ctx: typer.Context) -> str:
    """`flag`, or the value's type as `--help` shows it (`path`, `int`, `list[Path]`, ...)."""
    if getattr(param, "is_flag", False):
        return "flag"
    shown = param.display_type(ctx) if hasattr(param, "display_type") else str(param.type)
    shown = shown.strip("<>").removesuffix(" range")
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is not None:
        shown += f", >= {low}"
    if high is not None:
        shown += f", <= {high}"
    return f"`{shown}`" + (", repeatable" if param.multiple else "")


def param_default(param: Any) -> str:
    """The default as a user passes it; `required` or (none) where there is none."""
    if param.required:
        return "required"
    if isinstance(getattr(param, "show_default", None), str):
        return _escape(param.show_default)
    value = param.default
    if getattr(param, "is_flag", False) and param.secondary_opts:
        return f"`{(param.opts if value else param.secondary_opts)[0]}`"
    if getattr(param, "is_flag", False):
        return "on" if value else "off"
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return _NO_DEFAULT
    if callable(value):
        return "(computed when run)"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{_plain(v)}`" for v in value)
    return f"`{_plain(value)}`"


def _plain(value: Any) -> str:
    return str(value.value if isinstance(value, Enum) else value)


def param_help(param: Any) -> str:
    text = _escape(" ".join(_plain_help(param.help or "").split()))
    envvar = param.envvar if isinstance(param.envvar, (list, tuple)) else [param.envvar]
    names = [f"`{name}`" for name in envvar if name]
    return f"{text} (environment: {', '.join(names)})" if names else text


def param_table(command: Any, ctx: typer.Context) -> list[str]:
    """The Markdown table of the command's visible arguments and options (empty if none)."""
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    params.sort(key=lambda p: p.param_type_name != "argument")
    if not params:
        return []
    rows = ["| Argument / option | Type | Default | Help |", "|---|---|---|---|"]
    for p in params:
        cells = (param_name(p), param_type(p, ctx), param_default(p), param_help(p))
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def _anchor(title: str) -> str:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens
    return re.sub(r"[^a-z0-9 _-]", "", title.lower()).replace(" ", "-")


def command_section(command: Any, ctx: typer.Context) -> list[str]:
    """One command's section: heading, usage, help text, sub-commands or parameter table."""
    lines = [f"## {ctx.command_path}", "", "```text", usage(command, ctx), "```", ""]
    for paragraph in help_paragraphs(command):
        lines += [paragraph, ""]
    if hasattr(command, "list_commands"):
        subs = [f"{ctx.command_path} {name}" for name in command.list_commands(ctx)]
        lines += [f"Commands: {', '.join(f'[{s}](#{_anchor(s)})' for s in subs)}.", ""]
    table = param_table(command, ctx)
    return lines + table + ([""] if table else [])


def markdown() -> str:
    """The whole reference: header, contents, then one section per command."""
    found = list(commands())
    contents = [f"- [{ctx.command_path}](#{_anchor(ctx.command_path)})" for _, ctx in found]
    lines = [HEADER, "## Contents", "", *contents, ""]
    for command, ctx in found:
        lines += command_section(command, ctx)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
