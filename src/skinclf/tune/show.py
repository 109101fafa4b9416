"""`skinclf tune --show`: a study's leaderboard and Optuna's plots of it (matplotlib PNGs)."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skinclf.errors import ConfigError
from skinclf.tune.storage import DB_NAME, journal_path, open_storage, storage_url, study_names
from skinclf.tune.study import redacted

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


@dataclass
class Leaderboard:
    study: str
    counts: dict[str, int]
    best: list[dict[str, Any]]  # number, value, params, seconds, baseline: best first
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def resolve(target: str) -> tuple[str, Path | None]:
    """(storage URL, default plot folder) of a study folder, a study file or a storage URL."""
    path = Path(target)
    if "://" not in target and not target.startswith("journal:"):
        if path.is_dir():
            if not (path / DB_NAME).is_file():
                raise ConfigError(
                    f"{path} holds no {DB_NAME}: is it a study folder of skinclf tune?"
                )
            return storage_url(path, None), path
        if not path.is_file():
            raise ConfigError(
                f"{target} is neither a study folder, a study file nor a storage URL."
            )
        url = (
            f"sqlite:///{path}"
            if path.suffix in (".db", ".sqlite", ".sqlite3")
            else f"journal:{path}"
        )
        return url, path.parent
    if target.startswith("sqlite:///"):
        file = Path(target.removeprefix("sqlite:///"))
        if not file.is_file():
            raise ConfigError(f"{file} does not exist: no study there.")
        return target, file.parent
    journal = journal_path(target)
    if journal is not None and not journal.is_file():
        raise ConfigError(f"{journal} does not exist: no study there.")
    return storage_url(None, target), journal.parent if journal is not None else None


def show(target: str, study_name: str | None = None, plots: Path | None = None, top: int = 10):
    """The leaderboard of a study and its plots, written as PNG into `plots` (default: the
    study's folder)."""
    import optuna

    url, folder = resolve(target)
    storage = open_storage(url, heartbeat=None)
    target = redacted(target)  # never print a password
    names = study_names(storage)
    if study_name is None:
        if len(names) != 1:
            listed = ", ".join(names) if names else "none"
            raise ConfigError(
                f"{target} holds {len(names)} studies ({listed}): name one with --study."
            )
        study_name = names[0]
    elif study_name not in names:
        raise ConfigError(
            f"{target} has no study '{study_name}'; it has: {', '.join(names) or 'none'}."
        )
    study = optuna.load_study(study_name=study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    done = sorted(
        (t for t in trials if t.state.name == "COMPLETE"),
        key=lambda t: t.value,
        reverse=study.direction == optuna.study.StudyDirection.MAXIMIZE,
    )
    best = [
        {
            "number": t.number,
            "value": t.value,
            "params": dict(t.params),
            "seconds": t.duration.total_seconds() if t.duration else None,
            "baseline": bool(t.user_attrs.get("baseline")),
        }
        for t in done[:top]
    ]
    board = Leaderboard(study_name, {s: counts.get(s, 0) for s in STATES}, best)
    out = plots if plots is not None else folder
    if out is None:
        raise ConfigError(f"{target} has no study folder to write the plots into: add --plots DIR.")
    _plot(study, len(done), Path(out), board)
    return board


def _plot(study, complete: int, out: Path, board: Leaderboard) -> None:
    """Optimisation history, parameter importances, parallel coordinates, intermediate values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis

    intermediate = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    plots = {
        "history": (vis.plot_optimization_history, complete >= 1, "no complete trial"),
        "importances": (vis.plot_param_importances, complete >= 2, "fewer than 2 complete trials"),
        "parallel_coordinate": (vis.plot_parallel_coordinate, complete >= 1, "no complete trial"),
        "intermediate_values": (
            vis.plot_intermediate_values,
            intermediate,
            "no trial reported per-epoch scores (only --stage finetune does)",
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, (plot, possible, why) in plots.items():
        if not possible:
            board.notes.append(f"{name}: skipped, {why}")
            continue
        with warnings.catch_warnings():  # optuna.visualization.matplotlib is experimental
            warnings.simplefilter("ignore")
            try:
                ax = plot(study)
            except (ValueError, RuntimeError) as exc:  # e.g. importances of constant parameters
                board.notes.append(f"{name}: skipped, {exc}")
                continue
        _label(ax, name)
        if name == "importances":
            _few_trials(ax, complete, board)
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(*SIZES.get(name, (9, 5.5)))
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        board.plots.append(path)


FEW_FOR_IMPORTANCES = 10  # fANOVA's forest on fewer complete trials ranks little but noise


def _few_trials(ax, complete: int, board: Leaderboard) -> None:
    """Importances say how many complete trials they rest on; below 10, the board says so too."""
    if hasattr(ax, "set_title"):
        ax.set_title(f"Hyperparameter importances ({complete} complete trials)")
    if complete < FEW_FOR_IMPORTANCES:
        board.notes.append(
            f"importances: from only {complete} complete trials, a rough guide, not a ranking"
        )


SIZES = {"parallel_coordinate": (14, 6.5)}  # one axis per searched setting: room for ten
AXES = {  # Optuna's generic axis names, in the study's own words
    "history": ("trial", "validation balanced accuracy"),
    "intermediate_values": ("epoch (0: the first)", "validation balanced accuracy (one view)"),
}


def _label(ax, name: str) -> None:
    if name in AXES and hasattr(ax, "set_xlabel"):
        ax.set_xlabel(AXES[name][0])
        ax.set_ylabel(AXES[name][1])
