"""The data report: one self-contained HTML page a user reads before training.

Class distribution, example images per class, the metadata per class (age/sex/localization
for HAM10000, region/fitspatrick for PAD-UFES-20) and images per lesion/patient. Plots are
embedded as base64 PNG, examples as small base64 JPEG thumbnails, so the page embeds dataset
images: never commit one.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from skinclf.classes import CLASS_NAMES, CLASSES
from skinclf.data.formats import open_rgb

THUMB = 112
_PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
            "#9c755f", "#bab0ac"]  # fmt: skip
_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
 background:#f5f6f8;color:#1d2330;line-height:1.45}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:0 0 12px}
h3{font-size:15px;margin:14px 0 6px;color:#39414f}
.sub{color:#5b6576;margin:0 0 18px}
section{background:#fff;border:1px solid #e2e5ea;border-radius:10px;padding:18px 22px;
 margin:18px 0;box-shadow:0 1px 2px rgba(0,0,0,.04)}
.kpis{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0 4px}
.kpi{background:#fff;border:1px solid #e2e5ea;border-radius:10px;padding:10px 16px;min-width:120px}
.kpi b{display:block;font-size:22px}.kpi span{color:#5b6576;font-size:13px}
table{border-collapse:collapse;font-size:14px;margin:6px 0}
th,td{padding:4px 12px;border-bottom:1px solid #eceef2;text-align:right}
th{background:#f0f2f5;font-weight:600}
td:first-child,th:first-child,td.l{text-align:left}
img.plot{max-width:100%;height:auto;display:block;margin:6px 0}
.row{display:flex;gap:18px;flex-wrap:wrap;align-items:flex-start}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin-bottom:6px}
figure{margin:0;width:112px}figure img{width:112px;height:112px;object-fit:cover;
 border-radius:6px;display:block;background:#ddd}
figcaption{font-size:10px;color:#5b6576;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.cls{font-weight:600}.muted{color:#5b6576;font-size:13px}
.note{font-size:13px;color:#8a5a00;background:#fff7e0;border:1px solid #f3dfa2;
 border-radius:8px;padding:8px 12px}
"""


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


def _png(fig, alt: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table_html(df: pd.DataFrame, index_name: str = "", left: tuple[str, ...] = ()) -> str:
    """A plain HTML table; numbers right-aligned, `left` columns left-aligned."""
    head = "".join(
        f"<th{' class=l' if c in left else ''}>{html.escape(str(c))}</th>"
        for c in [index_name, *df.columns]
    )
    aligned = [c in left for c in df.columns]

    def cell(v: object, is_left: bool) -> str:
        text = f"{v:,}" if isinstance(v, (int, np.integer)) else str(v)
        return f"<td{' class=l' if is_left else ''}>{html.escape(text)}</td>"

    rows = "".join(
        f"<tr><td>{html.escape(str(i))}</td>"
        + "".join(cell(v, lf) for v, lf in zip(row, aligned, strict=True))
        + "</tr>"
        for i, row in zip(df.index, df.itertuples(index=False), strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _colours(order: list[str]) -> dict[str, str]:
    return {c: _PALETTE[i % len(_PALETTE)] for i, c in enumerate(order)}


def _class_distribution(cat: pd.Series, order: list[str]) -> str:
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
    ratio = f"The largest class has {largest / smallest:.0f}x the images of the smallest"
    return (
        "<section><h2>Class distribution</h2>"
        f"<p class='muted'>{ratio}: report balanced accuracy, and train with class weights or "
        "a balanced sampler.</p><div class='row'><div>"
        + _table_html(df, "class", left=("name",))
        + "</div><div style='flex:1;min-width:380px'>"
        + _png(fig, "Images per class")
        + "</div></div></section>"
    )


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
) -> str:
    parts = ["<section><h2>Example images</h2>"]
    parts.append(f"<p class='muted'>Up to {per_class} random images per class (centre crop).</p>")
    for c in order:
        rows = table[(cat == c) & (table["path"] != "")]
        pick = rows.sample(min(per_class, len(rows)), random_state=0) if len(rows) else rows
        figures = []
        for image_id, path in zip(pick["image_id"], pick["path"], strict=True):
            data = _thumbnail(path, max_pixels)
            if data:
                figures.append(
                    f"<figure><img alt='{html.escape(image_id)}' "
                    f"src='data:image/jpeg;base64,{data}'><figcaption title='"
                    f"{html.escape(image_id)}'>{html.escape(image_id)}</figcaption></figure>"
                )
        name = CLASS_NAMES.get(c, "")
        parts.append(f"<h3><span class='cls'>{html.escape(c)}</span> "
                     f"<span class='muted'>{html.escape(name)} · {len(rows):,} images</span></h3>"
                     f"<div class='grid'>{''.join(figures)}</div>")  # fmt: skip
    parts.append("</section>")
    return "".join(parts)


def _share_heatmap(
    cat: pd.Series, values: pd.Series, order: list[str], title: str, natural: bool = False
) -> str:
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


def _age_plot(cat: pd.Series, age: pd.Series, order: list[str]) -> str:
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


def _metadata(table: pd.DataFrame, cat: pd.Series, order: list[str]) -> str:
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
    if not plots:
        return ""
    cells = "".join(f"<div>{p}</div>" for p in plots)
    return f"<section><h2>Metadata per class</h2><div class='row'>{cells}</div></section>"


def _groups(table: pd.DataFrame, cat: pd.Series, order: list[str]) -> str:
    import matplotlib.pyplot as plt

    datasets = set(table["dataset"])
    name = ("lesion_id" if datasets == {"ham10000"} else
            "patient_id" if datasets == {"pad-ufes-20"} else "group")  # fmt: skip
    sizes = table.groupby("group").size()
    hist = sizes.value_counts().sort_index()
    plot = ""
    if len(hist) > 1:
        fig, ax = plt.subplots(figsize=(0.6 * len(hist) + 2.6, 2.8), layout="constrained")
        ax.bar([str(k) for k in hist.index], hist.to_numpy(), color=_PALETTE[0], width=0.6)
        for x, v in enumerate(hist.to_numpy()):
            ax.text(x, v, f"{v:,}", ha="center", va="bottom", fontsize=9)
        ax.set_xlabel(f"images per {name}")
        ax.set_ylabel(f"{name}s")
        ax.spines[["top", "right"]].set_visible(False)
        plot = f"<div>{_png(fig, f'Images per {name}')}</div>"
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
    return (
        f"<section><h2>Images per {name}</h2><p class='muted'>{text}</p><div class='row'>"
        f"{plot}<div>" + _table_html(per_class, "class") + "</div></div></section>"
    )


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
    body = [
        f"<h1>Data report · {html.escape(datasets)}</h1>",
        "<p class='sub'>What to know about the data before training: class balance, what the "
        "images look like, metadata per class, and how many images share a lesion or patient."
        "</p><div class='kpis'>",
        *(f"<div class='kpi'><b>{v}</b><span>{k}</span></div>" for v, k in kpis),
        "</div>",
    ]
    if len(table):
        body += [
            _class_distribution(cat, order),
            _examples(table, cat, order, examples_per_class, max_pixels),
            _metadata(table, cat, order),
            _groups(table, cat, order),
        ]
    body.append(
        "<p class='note'>This page embeds images from the dataset: keep it with the data and "
        "never commit or publish it unless the dataset's licence allows.</p>"
    )
    page = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>Data report · {html.escape(datasets)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main></body></html>"
    )
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
