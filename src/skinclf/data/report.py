"""The data report: one self-contained HTML page a user reads before training.

Class distribution, example images per class, the metadata per class (age/sex/localization
for HAM10000, region/fitspatrick for PAD-UFES-20) and images per lesion/patient. Plots are
embedded as base64 PNG, examples as small base64 JPEG thumbnails, so the page embeds dataset
images: never commit one. The page is the `data.html` template (skinclf/templates), in the
evaluation report's style.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

from skinclf.classes import CLASS_NAMES, CLASSES
from skinclf.data.formats import open_rgb
from skinclf.templates import render

THUMB = 112
_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
            "#9c755f", "#bab0ac"]  # fmt: skip


def _category(table: pd.DataFrame) -> pd.Series:
    """The class, or for rows without one the dataset's own diagnosis (e.g. 'scc (OOD)')."""
    cat = table["label"].astype(str).copy()
    empty = cat == ""
    if empty.any():
        if "diagnostic" in table.columns:
            own = table["diagnostic"].astype(str).str.lower()
            cat[empty] = own[empty] + np.where(table["semantic_ood"][empty], " (OOD)", "")
        else:
            cat[empty] = np.where(table["semantic_ood"][empty], "semantic OOD", "(no class)")
    return cat


def _order(categories: pd.Series) -> list[str]:
    present = set(categories)
    return [c for c in CLASSES if c in present] + sorted(present - set(CLASSES))


def _png(fig, alt: str) -> dict[str, str]:
    """The figure as a base64 PNG with its alt text (the template embeds it)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return {"data": base64.b64encode(buf.getvalue()).decode("ascii"), "alt": alt}


def _table(df: pd.DataFrame, index_name: str = "", left: tuple[str, ...] = ()) -> dict:
    """A table for the `table` macro: integers with thousands separators, `left` columns
    left-aligned."""

    def text(v: object) -> str:
        return f"{v:,}" if isinstance(v, (int, np.integer)) else str(v)

    return {
        "header": [index_name, *df.columns],
        "rows": [
            [str(i), *[text(v) for v in row]]
            for i, row in zip(df.index, df.itertuples(index=False), strict=True)
        ],
        "left": [j + 1 for j, c in enumerate(df.columns) if c in left],
    }


def _colours(order: list[str]) -> dict[str, str]:
    return {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(order)}


def _class_distribution(cat: pd.Series, order: list[str]) -> dict:
    import matplotlib.pyplot as plt

    counts = cat.value_counts().reindex(order, fill_value=0)
    shares = counts / counts.sum()
    colours = _colours(order)
    fig, ax = plt.subplots(figsize=(6.4, 0.42 * len(order) + 0.9), layout="constrained")
    ax.barh(order[::-1], counts[order[::-1]], color=[colours[c] for c in order[::-1]])
    for y, c in enumerate(order[::-1]):
        ax.text(counts[c], y, f" {counts[c]:,} ({shares[c]:.1%})", va="center", fontsize=9)
    ax.set_xlim(0, counts.max() * 1.3 if counts.max() else 1)
    ax.set_xlabel("images")
    ax.spines[["top", "right"]].set_visible(False)
    df = pd.DataFrame(
        {
            "name": [CLASS_NAMES.get(c, "no HAM10000 class") for c in order],
            "images": [f"{counts[c]:,}" for c in order],
            "share": [f"{shares[c]:.1%}" for c in order],
        },
        index=order,
    )
    largest, smallest = counts.max(), counts[counts > 0].min()
    return {
        "ratio": f"{largest / smallest:.0f}",
        "table": _table(df, "class", left=("name",)),
        "plot": _png(fig, "Images per class"),
    }


def _thumbnail(path: str, max_pixels: int | None = None) -> str:
    try:
        img = open_rgb(path, draft=(THUMB * 2, THUMB * 2), max_pixels=max_pixels)
    except Exception:  # noqa: BLE001  (a broken image must not stop the report)
        return ""
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((THUMB, THUMB))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _examples(
    table: pd.DataFrame,
    cat: pd.Series,
    order: list[str],
    per_class: int,
    max_pixels: int | None = None,
) -> list[dict]:
    """Per class: its name, image count and up to `per_class` random thumbnails (id, JPEG)."""
    out = []
    for c in order:
        rows = table[(cat == c) & (table["path"] != "")]
        pick = rows.sample(min(per_class, len(rows)), random_state=0) if len(rows) else rows
        thumbs = [
            (image_id, _thumbnail(path, max_pixels))
            for image_id, path in zip(pick["image_id"], pick["path"], strict=True)
        ]
        out.append(
            {
                "label": c,
                "name": CLASS_NAMES.get(c, ""),
                "n": f"{len(rows):,}",
                "thumbs": [(image_id, data) for image_id, data in thumbs if data],
            }
        )
    return out


def _share_heatmap(
    cat: pd.Series, values: pd.Series, order: list[str], title: str, natural: bool = False
) -> dict[str, str]:
    """Share of each value within each class, as a heatmap (rows: classes); columns by
    frequency (top 15), or in sorted order if `natural`; missing and other last."""
    top = 15
    import matplotlib.pyplot as plt

    values = values.astype(object).where(values.notna(), "(missing)").astype(str)
    keep = values.value_counts().index[:top]
    values = values.where(values.isin(keep), "(other)")
    tab = pd.crosstab(cat, values).reindex(index=order, fill_value=0)
    cols = [v for v in values.value_counts().index if v in tab.columns]
    if natural:
        cols = sorted(cols)
    cols = [c for c in cols if c not in ("(missing)", "(other)")] + [
        c for c in ("(other)", "(missing)") if c in cols
    ]
    tab = tab[cols]
    share = tab.div(tab.sum(axis=1).replace(0, 1), axis=0)
    fig, ax = plt.subplots(
        figsize=(max(4.2, 0.55 * len(cols) + 2.4), 0.42 * len(order) + 1.8), layout="constrained"
    )
    im = ax.imshow(share.to_numpy(), cmap="Blues", vmin=0, vmax=max(share.to_numpy().max(), 1e-9),
                   aspect="auto")  # fmt: skip
    ax.set_xticks(range(len(cols)), cols, rotation=40, ha="right", fontsize=9)
    ax.set_yticks(range(len(order)), order, fontsize=9)
    for (i, j), v in np.ndenumerate(share.to_numpy()):
        if tab.iat[i, j]:
            ax.text(j, i, f"{v:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if v > 0.55 * share.to_numpy().max() else "#1d2330")  # fmt: skip
    ax.set_title(title, fontsize=11)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the class")
    return _png(fig, title)


def _matplotlib_version() -> tuple[int, int]:
    import matplotlib

    major, minor = matplotlib.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def _age_plot(cat: pd.Series, age: pd.Series, order: list[str]) -> dict[str, str]:
    import matplotlib.pyplot as plt

    data = [age[(cat == c) & age.notna()].to_numpy() for c in order]
    fig, ax = plt.subplots(figsize=(5.2, 0.42 * len(order) + 1.2), layout="constrained")
    colours = _colours(order)
    horizontal = (
        {"orientation": "horizontal"} if _matplotlib_version() >= (3, 10) else {"vert": False}
    )
    parts = ax.boxplot(
        [d if len(d) else [np.nan] for d in data], patch_artist=True, widths=0.6,
        showfliers=False, **horizontal,
    )  # fmt: skip
    for patch, c in zip(parts["boxes"], order, strict=True):
        patch.set_facecolor(colours[c])
        patch.set_alpha(0.75)
    ax.set_yticks(range(1, len(order) + 1), order)
    ax.invert_yaxis()
    ax.set_xlabel("age (years)")
    missing = int(age.isna().sum())
    ax.set_title(f"Age per class ({missing:,} missing)", fontsize=11)
    for median in parts["medians"]:
        median.set_color("#1d2330")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig, "Age per class")


def _metadata(table: pd.DataFrame, cat: pd.Series, order: list[str]) -> list[dict[str, str]]:
    """The metadata plots: age per class, and the share of each value of the other columns."""
    plots = []
    if "age" in table.columns:
        age = pd.to_numeric(table["age"], errors="coerce")
        if age.notna().any():
            plots.append(_age_plot(cat, age, order))
    columns = {
        "sex": "Sex per class",
        "gender": "Gender per class",
        "fitspatrick": "Fitzpatrick skin type (fitspatrick) per class",
        "localization": "Localization per class",
        "region": "Region per class",
    }
    for column, title in columns.items():
        if column in table.columns and table[column].notna().any():
            values = table[column]
            if column == "fitspatrick":
                values = pd.to_numeric(values, errors="coerce").map(
                    lambda v: f"type {int(v)}" if pd.notna(v) else np.nan
                )
            natural = column in ("sex", "gender", "fitspatrick")
            plots.append(_share_heatmap(cat, values, order, title, natural=natural))
    return plots


def _groups(table: pd.DataFrame, cat: pd.Series, order: list[str]) -> dict:
    import matplotlib.pyplot as plt

    datasets = set(table["dataset"])
    name = ("lesion_id" if datasets == {"ham10000"} else
            "patient_id" if datasets == {"pad-ufes-20"} else "group")  # fmt: skip
    sizes = table.groupby("group").size()
    hist = sizes.value_counts().sort_index()
    plot = None
    if len(hist) > 1:
        fig, ax = plt.subplots(figsize=(0.6 * len(hist) + 2.6, 2.8), layout="constrained")
        ax.bar([str(k) for k in hist.index], hist.to_numpy(), color=_PALETTE[0], width=0.6)
        for x, v in enumerate(hist.to_numpy()):
            ax.text(x, v, f"{v:,}", ha="center", va="bottom", fontsize=9)
        ax.set_xlabel(f"images per {name}")
        ax.set_ylabel(f"{name}s")
        ax.spines[["top", "right"]].set_visible(False)
        plot = _png(fig, f"Images per {name}")
    per_class = pd.DataFrame(
        {
            "images": cat.value_counts().reindex(order, fill_value=0),
            f"{name}s": table.groupby(cat)["group"].nunique().reindex(order, fill_value=0),
        }
    )
    ratio = per_class["images"] / per_class[f"{name}s"].replace(0, np.nan)
    per_class[f"images per {name}"] = ratio.map(lambda v: f"{v:.2f}" if pd.notna(v) else "–")
    multi = int((sizes > 1).sum())
    text = (
        f"{len(sizes):,} {name}s; {multi:,} have more than one image. Splits keep every "
        f"{name} in one split, so near-identical images never leak between train and test."
    )
    return {"name": name, "text": text, "plot": plot, "table": _table(per_class, "class")}


def write_report(
    table: pd.DataFrame,
    out_html: Path,
    examples_per_class: int = 8,
    max_pixels: int | None = None,
) -> Path:
    """Write the data report of a dataset table (DESIGN.md) as one self-contained HTML page.

    `max_pixels`: images larger than this are not shown (`formats.max_image_pixels`)."""
    import matplotlib

    matplotlib.use("Agg")
    out_html = Path(out_html)
    table = table.reset_index(drop=True)
    cat = _category(table)
    order = _order(cat)
    datasets = ", ".join(sorted(set(table["dataset"]))) or "dataset"
    kpis = [
        (f"{len(table):,}", "images"),
        (f"{table['group'].nunique():,}", "groups (lesions/patients)"),
        (f"{sum(c in CLASSES for c in order)}", "classes present"),
        (f"{int(table['semantic_ood'].sum()):,}", "semantic OOD (no class)"),
    ]
    sections = {}
    if len(table):
        sections = {
            "distribution": _class_distribution(cat, order),
            "examples": _examples(table, cat, order, examples_per_class, max_pixels),
            "per_class": examples_per_class,
            "metadata": _metadata(table, cat, order),
            "groups": _groups(table, cat, order),
        }
    page = render(
        "data.html",
        title=f"Data report · {datasets}",
        datasets=datasets,
        kpis=kpis,
        thumbnail_mime="jpeg",  # the example thumbnails are JPEG-encoded
        **sections,
    )
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
