"""docs/cli.md is generated from the Typer app: every command, every option with its default."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinclf.cli import reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


@pytest.fixture(scope="module")
def text() -> str:
    return reference.markdown()


def test_cli_doc_is_generated_and_current(text: str) -> None:
    assert DOC.read_text() == text, "docs/cli.md is stale: run `make docs`"


def test_every_command_and_sub_command_has_a_section(text: str) -> None:
    paths = [ctx.command_path for _, ctx in reference.commands()]
    for path in ("skinclf", "skinclf train", "skinclf data check", "skinclf models list"):
        assert path in paths
    for path in paths:
        assert f"\n## {path}\n" in text
        assert f"- [{path}](#{path.replace(' ', '-')})" in text


@pytest.mark.parametrize(
    "row",
    [
        # name | type | default, as a user passes them
        "| `--trials` | `int` | `30` |",
        "| `--preset` | `str` | `default` |",
        "| `--scores` | `str` | `msp,max_logit,margin,neg_entropy,doctor` |",
        "| `--target-risk` | `str` | `auto` |",
        "| `--progress` / `--no-progress` | flag | `--progress` |",
        "| `--resume` / `--no-resume` | flag | `--no-resume` |",
        "| `--onnx` | flag | off |",
        "| `--out`, `-o` | `path` | required |",
        "| `--format`, `-f` | `str` | `auto` |",
        "| `path` | `path` | required |",
        "| `--ood` | `list[Path]`, repeatable | (none) |",
        "| `--size` | `int, >= 32` | (none) |",
    ],
)
def test_known_options_appear_with_type_and_default(text: str, row: str) -> None:
    assert row in text


def test_usage_lines_and_help_text_are_the_apps_own(text: str) -> None:
    assert "```text\nskinclf data check [OPTIONS] {path}\n```" in text
    assert "Validate a dataset (metadata, labels, every image)" in text
    # rich markup is rendered as --help shows it, and Markdown specials are escaped
    assert "pip install 'skinclf[postgres]'" in text
    assert "skinclf\\[" not in text
    assert "conf_\\<name>" in text


def test_hidden_options_are_left_out(text: str) -> None:
    assert "`--sources`" not in text  # data download's hidden test hook


def test_every_option_of_every_command_is_listed(text: str) -> None:
    for command, ctx in reference.commands():
        section = text.split(f"\n## {ctx.command_path}\n", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if param.hidden:
                continue
            name = reference.param_name(param)
            assert f"\n| {name} |" in section, f"{ctx.command_path}: {name} missing"


def test_a_row_breaks_no_table_on_pipes_or_newlines() -> None:
    class Option:
        param_type_name = "option"
        opts, secondary_opts = ["--x"], []
        help, envvar, hidden, required, multiple = "a | b\nc", None, False, False, False
        default, show_default, is_flag = "p|q", True, False
        nargs, min, max = 1, None, None

        def display_type(self, ctx: object) -> str:
            return "<str>"

    class Command:
        params = [Option()]

    rows = reference.param_table(Command(), ctx=None)  # type: ignore[arg-type]
    assert rows[-1] == "| `--x` | `str` | `p\\|q` | a \\| b c |"


def test_help_paragraphs_are_unwrapped_for_the_terminal() -> None:
    from skinclf.cli.help_text import unwrap

    doc = """First line.

        A paragraph wrapped
        at the docstring's width.

        - an item
          continued
        - another item

        Example:
            skinclf tune --data D
            --out O
        """
    assert unwrap(doc) == (
        "First line.\n\nA paragraph wrapped at the docstring's width.\n\n"
        "- an item continued\n- another item\n\nExample:\n    skinclf tune --data D\n    --out O"
    )
    assert unwrap("\b\nkept\nas is") == "\b\nkept\nas is"


def test_command_help_wraps_at_the_terminal_width_not_the_docstrings() -> None:
    from typer.testing import CliRunner

    from skinclf.cli import app

    wide = CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "400"}, color=False)
    assert wide.exit_code == 0
    # lines 1 and 4 of a docstring paragraph are on one line of a wide terminal
    line = next(x for x in wide.output.splitlines() if "--stage head (default)" in x)
    assert "pruned when it trails earlier trials" in line
    narrow = CliRunner().invoke(app, ["tune", "--help"], env={"COLUMNS": "80"}, color=False)
    assert max(len(x) for x in narrow.output.splitlines()) <= 80


def _commands():
    """(name, click command) of every leaf command of the app."""
    import typer.main

    from skinclf.cli import app

    root = typer.main.get_command(app)

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from walk(cmd, [*prefix, name])
            else:
                yield " ".join([*prefix, name]), cmd

    return list(walk(root, []))


@pytest.mark.parametrize("name", [name for name, _ in _commands()])
def test_every_command_help_has_an_example_and_flags_take_no_value(name: str) -> None:
    from typer.testing import CliRunner

    from skinclf.cli import app

    result = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output, f"skinclf {name} --help has no example"
    assert "<bool>" not in result.output, f"skinclf {name} --help shows a flag as taking a value"


def test_key_numbers_are_never_cut_in_a_narrow_terminal() -> None:
    from rich.console import Console

    from skinclf.cli.run import numbers_table

    rows = [
        ("isic2018-test-dev: balanced accuracy [95 % CI]", "0.723 [0.681, 0.760]"),
        ("test: selective balanced accuracy at 80 % coverage (margin)", "0.929"),
    ]
    console = Console(width=60, record=True)
    console.print(numbers_table(rows))
    text = console.export_text()
    assert "0.723 [0.681, 0.760]" in text and "…" not in text
    assert "(margin)" in text  # the label wraps instead
