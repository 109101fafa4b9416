"""The HTML reports' Jinja2 templates and their one stylesheet (package data).

`base.html` is the page (the stylesheet `style.css` inlined, so a report is one self-contained
file); `macros.html` holds the tables, cells and embedded images; `evaluation.html` (with
`policy.html`) is `skinclf evaluate`'s report.html, `data.html` the data report.
"""

from __future__ import annotations

import math
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined


def num(value: object, digits: int = 3) -> str:
    """A number as the reports print it: – when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


@cache
def environment() -> Environment:
    """The templates' environment: autoescaped, undefined names are errors."""
    env = Environment(
        loader=PackageLoader("skinclf.templates", "."),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = num
    return env


def render(template: str, **context: object) -> str:
    """Render one of the report templates with `context`."""
    return environment().get_template(template).render(**context)
