"""The model card of an exported model: model_card.json, and MODEL_CARD.md written from it.

What the card says comes from the run folders and their evaluation: the training data and its
licence (the source table, `data/sources.yaml`), split sizes, metrics with their 95 % intervals
on the test split and on each out-of-distribution and external set evaluated, and the
selective classifier (scores, temperature, thresholds, the risk or coverage they were chosen
for, and the data that chose them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

INTENDED_USE = (
    "Research on skin-lesion classification that abstains when unsure: not a medical device "
    "and not a diagnosis. Do not use it to decide on the care of a patient."
)
LIMITATIONS = (
    "Trained on dermoscopic images of one source; other cameras, populations and skin types "
    "may be classified worse than the test metrics say.",
    "An abstention is a referral (to a dermatologist), never a reassurance.",
    "The 7 classes do not cover every skin lesion: an unfamiliar lesion may still be given "
    "one of them with high confidence.",
)
# the metrics a block of metrics.json has that the card reports (with `<name>_ci95` when there)
CARD_METRICS = (
    "n",
    "n_mapped",
    "n_semantic_ood",
    "balanced_accuracy",
    "accuracy",
    "macro_f1",
    "auroc_ovr_macro",
    "nll",
    "brier",
    "ece",
)


def metric_block(block: Mapping) -> dict:
    """The card's metrics of one metrics.json block: CARD_METRICS, every `*_ci95` interval,
    per-class recall, and for an OOD set its detection AUROC per score."""
    out = {k: block[k] for k in CARD_METRICS if block.get(k) is not None}
    out.update({k: v for k, v in block.items() if k.endswith("_ci95") and v is not None})
    if isinstance(block.get("recall"), Mapping):
        out["recall"] = dict(block["recall"])
    detection = block.get("detection")
    if isinstance(detection, Mapping):
        out["detection_auroc"] = {
            score: d.get("auroc") for score, d in detection.items() if isinstance(d, Mapping)
        }
    return out


def card_metrics(run_metrics: Sequence[Mapping], evaluation: Mapping | None, source: str) -> dict:
    """Metrics from the evaluation (`skinclf evaluate`'s metrics.json: with intervals), else
    from the runs' own metrics.json (val/test summaries without intervals, one per member)."""
    if evaluation:
        out: dict = {"source": source}
        for split in ("test", "val"):
            if isinstance(evaluation.get(split), Mapping):
                out[split] = metric_block(evaluation[split])
        for group in ("ood", "external"):
            sets = evaluation.get(group) or {}
            out[group] = {name: metric_block(b) for name, b in sets.items()}
        policy = (evaluation.get("policy") or {}).get("sets") or {}
        out["selective_policy"] = {
            name: {k: v for k, v in s.get("gated", {}).items() if not isinstance(v, dict)}
            for name, s in policy.items()
        }
        return out
    members = [
        {split: metric_block(m[split]) for split in ("val", "test") if split in m}
        for m in run_metrics
    ]
    return {
        "source": "the runs' metrics.json (no intervals: run `skinclf evaluate`)",
        **(members[0] if len(members) == 1 else {"members": members}),
    }


def split_sizes(split_csv: Path) -> dict[str, int]:
    """Images per split of a run's split.csv."""
    if not split_csv.is_file():
        return {}
    counts = pd.read_csv(split_csv, dtype=str, keep_default_na=False)["split"].value_counts()
    return {str(k): int(v) for k, v in counts.sort_index().items()}


def data_licence(provenance: Mapping) -> dict:
    """The licence of the training data, from the source table by its dataset format."""
    from skinclf.data.download import load_sources

    fmt = provenance.get("data_format") or "auto"
    if fmt == "auto" and provenance.get("data_path"):
        from skinclf.data.formats import detect_format

        try:
            fmt = detect_format(provenance["data_path"])
        except Exception:  # noqa: BLE001  (the data is not here any more: say so)
            fmt = "unknown"
    source = next((s for s in load_sources().values() if s.format == fmt), None)
    if source is None:
        return {"format": fmt, "licence": "unknown: see the licence of the training data"}
    return {
        "format": fmt,
        "dataset": source.name,
        "title": source.title,
        "licence": source.licence,
        "licence_url": source.licence_url,
        "licence_terms": source.licence_terms,
        "licence_note": source.licence_note,
        "citation": source.citation,
    }


def selective_card(sel, thresholds: dict, evaluation: Mapping | None) -> dict | None:
    """The selective classifier: its gates and thresholds, what they were chosen for, and the
    predictions files that chose them."""
    if sel is None:
        return None
    files = ((evaluation or {}).get("settings") or {}).get("files") or {}
    return {
        **thresholds,
        "target_risk": sel.target_risk,
        "delta": sel.delta,
        "solution_exists": sel.solution_exists,
        "chosen_on": sel.fitted_on,
        "n_chosen_on": sel.n_calib,
        "calib_coverage": sel.calib_coverage,
        "calib_risk": sel.calib_risk,
        "bound": sel.bound,
        "note": sel.note,
        "files": {k: files.get(k) for k in ("val", "calib") if files.get(k)},
    }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple) and len(value) == 2:
        return f"[{_fmt(value[0])}, {_fmt(value[1])}]"
    return "–" if value is None else str(value)


def _metrics_table(blocks: Mapping[str, Mapping]) -> list[str]:
    """A Markdown table: one row per set, each metric with its interval when there is one."""
    if not blocks:
        return ["No metrics."]
    names = [k for k in CARD_METRICS if any(k in b for b in blocks.values())]
    lines = ["| set | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, block in blocks.items():
        cells = []
        for k in names:
            ci = block.get(f"{k}_ci95")
            cells.append(_fmt(block.get(k)) + (f" {_fmt(ci)}" if ci else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(card: Mapping) -> str:
    """MODEL_CARD.md from the card."""
    data, model, metrics = card["training_data"], card["model"], card["metrics"]
    lic = data["licence"]
    lines = [
        f"# Model card: {card['model_id']}",
        "",
        f"skinclf {card['skinclf_version']}, exported {card['exported']}.",
        "",
        "## Intended use",
        "",
        card["intended_use"],
        "",
        "## Model",
        "",
        f"- {model['backbone']} at {model['image_size']} px ({model['resize']}), "
        f"{model['members']} member(s){' (mean probabilities)' if model['members'] > 1 else ''}",
        f"- inference: TTA {model['tta']}, precision {model['precision']}",
        *_offsets_lines(model.get("logit_offsets")),
        "",
        "## Training data",
        "",
        f"- {data.get('n_images', '?')} images in the {lic['format']} format at "
        f"{data.get('path')} (fingerprint {data.get('fingerprint', '?')})",
        f"- splits: {', '.join(f'{k} {v}' for k, v in data['splits'].items()) or 'unknown'}",
        f"- licence of {lic.get('dataset', 'the data')}: {lic['licence']} "
        f"{lic.get('licence_url', '')}".rstrip(),
    ]
    if lic.get("licence_terms"):
        lines.append(f"  ({lic['licence_terms']})")
    lines += ["", "## Metrics", "", f"From {metrics['source']}.", ""]
    sets = {k: metrics[k] for k in ("test", "val") if k in metrics}
    sets.update({f"OOD: {k}": v for k, v in metrics.get("ood", {}).items()})
    sets.update({f"external: {k}": v for k, v in metrics.get("external", {}).items()})
    for i, member in enumerate(metrics.get("members", [])):
        sets.update({f"member {i} {k}": v for k, v in member.items()})
    lines += _metrics_table(sets)
    lines += ["", "## Selective classifier", ""] + _selective_lines(card.get("selective"))
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card["limitations"]]
    return "\n".join(lines) + "\n"


def _offsets_lines(offsets: Mapping | None) -> list[str]:
    """The logit offsets line of the card's model section (none without offsets)."""
    if not offsets:
        return []
    values = ", ".join(f"{c} {v:+.2f}" for c, v in offsets["offsets"].items())
    return [
        f"- per-class logit offsets added before the decision ({values}), fitted to maximise "
        f"balanced accuracy on {offsets.get('n', '?')} {offsets.get('fitted_on', '')}".rstrip()
    ]


def _selective_lines(sel: Mapping | None) -> list[str]:
    if not sel:
        return ["None: this model never abstains (export with --selective to add one)."]
    conf = sel["confidence"]
    lines = [
        f"- confidence gate ({conf['gate']}): {conf['score']} >= {_fmt(conf['threshold'])}, "
        f"temperature {_fmt(conf['temperature'])}, target risk {_fmt(sel['target_risk'])} "
        f"(delta {_fmt(sel['delta'])}), target coverage {_fmt(conf['target_coverage'])}",
        f"- chosen on the {sel['chosen_on']} images (n = {sel['n_chosen_on']}): coverage "
        f"{_fmt(sel['calib_coverage'])}, risk {_fmt(sel['calib_risk'])}, bound "
        f"{_fmt(sel['bound'])}{'' if sel['solution_exists'] else ' (no threshold met the target)'}",
    ]
    if "ood" in sel:
        ood = sel["ood"]
        lines.append(
            f"- OOD gate (before it): {ood['score']} >= {_fmt(ood['threshold'])}, keeping "
            f"{_fmt(ood['id_kept'])} of {ood['n']} {ood['fitted_on']} images "
            f"(asked {_fmt(ood['id_keep'])}){'; ' + ood['chosen_by'] if ood['chosen_by'] else ''}"
        )
    lines += [f"- {name}: {path}" for name, path in sel.get("files", {}).items()]
    if sel.get("note"):
        lines.append(f"- note: {sel['note']}")
    return lines
