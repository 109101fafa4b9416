"""docs/settings.md, generated from the settings models and the presets (`make docs`).

Every setting with its type, built-in default, each preset's value and description, and each
preset's search spaces of `skinclf tune`; a test fails when the committed page is out of date.
"""

from __future__ import annotations

from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from skinclf.config import (
    RESUMABLE_KEYS,
    RunConfig,
    SearchParam,
    SearchSpaces,
    flat_settings,
    leaf_fields,
    load_config,
    load_search_space,
    preset_names,
    show_value,
)


def _type_text(annotation: Any) -> str:
    """A field's type in words: `int`, `float or null`, `ce, focal` (one of those)..."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return ", ".join(show_value(a) for a in args)
    if origin in (Union, UnionType):
        return " or ".join("null" if a is type(None) else _type_text(a) for a in args)
    if origin is tuple:
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    return getattr(annotation, "__name__", str(annotation))


def search_param_text(param: SearchParam) -> str:
    """A searched setting's values in words: `0.0 to 0.15`, `ce, focal`, `... (log)`."""
    if param.choices is not None:
        text = ", ".join(show_value(c) for c in param.choices)
    else:
        text = f"{show_value(param.low)} to {show_value(param.high)}"
        text += " (log)" if param.log else ""
        text += f" step {show_value(param.step)}" if param.step is not None else ""
    for key, values in (param.when or {}).items():
        shown = ", ".join(show_value(v) for v in values)
        text += f" if {key} is {shown}" if len(values) == 1 else f" if {key} in {shown}"
    return text


def _search_space_markdown(presets: list[str]) -> list[str]:
    """The search spaces of each preset's `tune:` section, one table per stage."""
    spaces = {p: load_search_space(p) for p in presets}
    lines = [
        "",
        "## Search spaces of `skinclf tune`",
        "",
        "The settings `skinclf tune --stage head|finetune` searches come from the preset's",
        "`tune:` section (`tune: {head: {KEY: SPEC}, finetune: {...}}`), where SPEC is",
        "`{low, high}` with optional `log: true` and `step`, or `{choices: [...]}`, and optional",
        "`when: {KEY: [values]}` to search it only while another setting has one of those",
        "values. A `tune.head` or `tune.finetune` in a `--config FILE` replaces that stage's",
        "space whole. Ranges are integers for integer settings, and every bound and choice must",
        "be a valid value of its setting (`skinclf tune` checks them all before any trial).",
    ]
    for stage in SearchSpaces.model_fields:
        keys = list(dict.fromkeys(k for p in presets for k in getattr(spaces[p], stage)))
        lines += ["", f"### `--stage {stage}`", ""]
        lines += ["| key | " + " | ".join(f"`{p}`" for p in presets) + " |"]
        lines += ["|---|" + "---|" * len(presets)]
        for key in keys:
            cells = [f"`{key}`"]
            for p in presets:
                param = getattr(spaces[p], stage).get(key)
                cells.append(search_param_text(param) if param is not None else "not searched")
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def settings_markdown() -> str:
    """docs/settings.md: every setting with its type, default, each preset's value and what it
    does, generated from the models above and the presets (`make docs` writes it)."""
    presets = preset_names()
    values = {p: flat_settings(load_config(p)) for p in presets}
    lines = [
        "# Settings",
        "",
        "Generated from `src/skinclf/config.py` and the presets in `src/skinclf/configs/` by",
        "`make docs` (`python -m skinclf.settings_docs > docs/settings.md`); a test fails when",
        "this file is out of date, so edit the models, not this file.",
        "",
        "Every key can be set as a dotted `key=value` argument of `skinclf train` or",
        "`skinclf tune` (the value parsed as YAML, e.g. `train.epochs=12`,",
        "`augment.scale=[0.5,1.0]`) or in a `--config FILE` of the same layout as a run's",
        "`config.yaml`; `skinclf train --print-config` shows the resolved settings without",
        "training. *built-in* is the value when neither the preset nor the command line sets the",
        "key; the preset columns are what `--preset NAME` gives. On `--resume` only",
        f"{', '.join(f'`{k}`' for k in RESUMABLE_KEYS)} may change.",
        "",
        "| key | type | built-in | " + " | ".join(f"`{p}`" for p in presets) + " | description |",
        "|---|---|---|" + "---|" * len(presets) + "---|",
    ]
    for key, info in leaf_fields(RunConfig):
        cells = [
            f"`{key}`",
            _type_text(info.annotation),
            f"`{show_value(info.get_default(call_default_factory=True))}`",
            *(f"`{show_value(values[p][key])}`" for p in presets),
            info.description or "",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += _search_space_markdown(presets)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(settings_markdown(), end="")
