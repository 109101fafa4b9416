"""The search space of a `skinclf tune` stage, declared in the preset YAML (`tune:` section):
checked before any trial, turned into Optuna distributions and, per trial, into overrides."""

from __future__ import annotations

import difflib
import json
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from skinclf.config import (
    RunConfig,
    SearchParam,
    SearchSpaces,
    flat_settings,
    load_config,
    parse_overrides,
    setting_annotations,
)
from skinclf.errors import ConfigError

Space = dict[str, SearchParam]


def value_text(value: Any) -> str:
    """A value as the right-hand side of a `key=value` override (parsed as YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def _types(annotation: Any) -> set[Any]:
    """The plain types and literal values an annotation allows (unions flattened)."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        return set().union(*(_types(a) for a in get_args(annotation)))
    if origin is Literal:
        return {"literal"}
    return {annotation}


def is_int(key: str) -> bool:
    """Whether a range of setting `key` is of integers (its type is int, not float)."""
    types = _types(setting_annotations()[key])
    return int in types and float not in types


def check_space(space: Space, cfg: RunConfig, stage: str, origin: str) -> None:
    """Refuse, in one sentence, a search space with an unknown setting, an empty or malformed
    range, or a bound or choice the setting does not accept (each is validated by building the
    run's settings with it)."""
    if not space:
        raise ConfigError(f"The {stage} search space (from {origin}) is empty: add tune.{stage}.")
    where = f"the {stage} search space (from {origin})"
    known = setting_annotations()
    base = cfg.model_dump(mode="json")
    for index, (key, param) in enumerate(space.items()):
        _check_name(key, known, where)
        _check_shape(key, param, where)
        for other in param.when or {}:
            _check_name(other, known, where)
            if other in space and list(space).index(other) > index:
                raise ConfigError(
                    f"In {where}, {key} depends on {other}, which must be listed above it."
                )
        values = param.choices if param.choices is not None else [param.low, param.high]
        for value in values:
            _check_value(cfg, base, key, value, where)


def _check_name(key: str, known: dict[str, Any], where: str) -> None:
    if key in known:
        return
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else "; see docs/settings.md for the keys."
    raise ConfigError(f"Unknown setting '{key}' in {where}{hint}")


def _check_shape(key: str, p: SearchParam, where: str) -> None:
    """Choices or a range, not both; a non-empty range of the setting's kind."""
    has_range = p.low is not None or p.high is not None
    if (p.choices is None) == (not has_range) or (has_range and None in (p.low, p.high)):
        raise ConfigError(f"In {where}, {key} needs either choices or both low and high.")
    if p.choices is not None:
        if not p.choices:
            raise ConfigError(f"In {where}, {key} has an empty list of choices.")
        return
    assert p.low is not None and p.high is not None
    if p.low > p.high:
        raise ConfigError(f"In {where}, the range of {key} is empty: low {p.low} > high {p.high}.")
    if p.log and p.low <= 0:
        raise ConfigError(f"In {where}, {key} has log: true, so low must be above 0.")
    if p.log and p.step is not None:
        raise ConfigError(f"In {where}, {key} has both log: true and a step; Optuna takes one.")
    if p.step is not None and p.step <= 0:
        raise ConfigError(f"In {where}, the step of {key} must be above 0.")
    types = _types(setting_annotations()[key])
    if not types & {int, float}:
        raise ConfigError(f"In {where}, {key} is not a number: give it choices, not a range.")
    whole = [v for v in (p.low, p.high, p.step) if v is not None]
    if is_int(key) and any(v != int(v) for v in whole):
        raise ConfigError(f"In {where}, {key} is an integer setting: low, high, step must be too.")


def _check_value(cfg: RunConfig, base: dict, key: str, value: Any, where: str) -> None:
    """`key=value` on top of the run's settings must be valid."""
    if is_int(key) and isinstance(value, float):
        value = int(value)
    try:
        load_config(cfg.preset, None, overrides_on(base, [f"{key}={value_text(value)}"]))
    except ConfigError as exc:
        reason = str(exc).split(": ", 1)[-1].rstrip(".")
        raise ConfigError(
            f"In {where}, {key} reaches {value_text(value)}, which is not a valid value ({reason})."
        ) from None


def overrides_on(base: dict, overrides: list[str]) -> list[str]:
    """The base config as overrides, then the trial's: a complete, validated config."""

    def flatten(d: dict, prefix: str = "") -> list[str]:
        items = []
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                items.extend(flatten(v, key + "."))
            else:
                items.append(f"{key}={json.dumps(v)}")  # JSON is valid YAML
        return items

    return [i for i in flatten(base) if not i.startswith("preset=")] + overrides


def distributions(space: Space) -> dict[str, Any]:
    """Each searched setting's Optuna distribution (a checked space)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for key, p in space.items():
        if p.choices is not None:
            out[key] = CategoricalDistribution(p.choices)
        elif is_int(key):
            step = int(p.step) if p.step is not None else 1
            out[key] = IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log, step=step)
        else:
            out[key] = FloatDistribution(p.low or 0.0, p.high or 0.0, log=p.log, step=p.step)
    return out


def applies(p: SearchParam, current: dict[str, Any]) -> bool:
    """Whether a setting is searched: the settings its `when` names have one of its values."""
    return all(current.get(k) in values for k, values in (p.when or {}).items())


def suggest(trial, space: Space, cfg: RunConfig) -> list[str]:
    """One point of `space` for `trial`, as key=value overrides; a setting with `when` is
    searched only while the settings it names (searched above, or fixed) match."""
    dists = distributions(space)
    current = flat_settings(cfg)
    overrides = []
    for key, p in space.items():
        if not applies(p, current):
            continue
        value = _suggest_one(trial, key, dists[key])
        current[key] = value
        overrides.append(f"{key}={value_text(value)}")
    return overrides


def baseline_point(space: Space, cfg: RunConfig) -> tuple[dict[str, Any], list[str]]:
    """The run's own values of the searched settings (those whose `when` holds): the untuned
    baseline, enqueued as a new study's first trial; and the `key=value`s that lie outside
    the space (then there is no baseline trial: Optuna would draw those settings instead)."""
    dists = distributions(space)
    current = flat_settings(cfg)
    point: dict[str, Any] = {}
    outside: list[str] = []
    for key, p in space.items():
        if not applies(p, current):
            continue
        value = current.get(key)
        if _contains(dists[key], value):
            point[key] = value
        else:
            outside.append(f"{key}={value_text(value)}")
    return point, outside


def _contains(dist, value: Any) -> bool:
    from optuna.distributions import CategoricalDistribution

    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not dist.low <= value <= dist.high:
        return False
    steps = None if dist.step is None else (value - dist.low) / dist.step
    return steps is None or abs(steps - round(steps)) < 1e-8


def _suggest_one(trial, key: str, dist) -> Any:
    """trial.suggest_* of one distribution (Optuna's public API)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, list(dist.choices))
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def without_fixed(spaces: SearchSpaces, overrides: list[str]) -> tuple[SearchSpaces, list[str]]:
    """The spaces without the settings fixed by `key=value` overrides (those stay as given in
    every trial), and the keys taken out."""

    def keys(d: dict, prefix: str = "") -> list[str]:
        out = []
        for k, v in d.items():
            out += keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
        return out

    fixed = set(keys(parse_overrides(overrides)))
    kept = {
        stage: {k: v for k, v in getattr(spaces, stage).items() if k not in fixed}
        for stage in SearchSpaces.model_fields
    }
    dropped = sorted(
        k for stage in SearchSpaces.model_fields for k in getattr(spaces, stage) if k in fixed
    )
    return SearchSpaces(**kept), list(dict.fromkeys(dropped))


def describe(space: Space) -> str:
    """The searched settings in one line, for the CLI."""
    return ", ".join(space)
