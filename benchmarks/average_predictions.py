"""Average predictions files of the same images (e.g. several runs' kept predictions of the
ISIC 2018 test images) into one ensemble predictions file: probabilities averaged image by image,
rows in the first file's order (the logit scores recomputed, the feature scores the first
file's, as `skinclf predict` does for an ensemble). `--offsets CV/logit_offsets.json` adds a
cv's logit offsets to the log of the mean, so the fold models' own predictions of a set average
to what `skinclf predict CV` writes (probabilities and logit scores). Then
`skinclf compare` compares it with any member. (For whole cross-validations, `skinclf
cv-ensemble` does this to every set.)

    .venv/bin/python benchmarks/average_predictions.py \
        benchmarks/results/tune/finetune-default/{baseline,retrained}/isic2018-test-dev.csv \
        --out runs/seed-ens/isic2018-test-dev.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skinclf.contracts.predictions import read_predictions, save_predictions
from skinclf.errors import DataError
from skinclf.scoring.ensemble import mean_predictions
from skinclf.scoring.offsets import read_offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", help="Predictions files, same images.")
    parser.add_argument("--out", type=Path, required=True, help="The ensemble's predictions file.")
    parser.add_argument("--offsets", type=Path, help="A logit_offsets.json to add to the mean.")
    args = parser.parse_args()
    if len(args.files) < 2:
        raise SystemExit("Give at least two predictions files to average.")
    members = [read_predictions(f, require_labels=False) for f in args.files]
    if len({p.n for p in members}) > 1:
        sizes = ", ".join(f"{f}: {p.n}" for f, p in zip(args.files, members, strict=True))
        raise SystemExit(f"The files predict different numbers of images ({sizes}).")
    try:
        offsets = None if args.offsets is None else read_offsets(args.offsets)
        mean = mean_predictions(members, offsets)
    except DataError as exc:
        raise SystemExit(str(exc)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_predictions(args.out, mean)
    added = f", offsets of {args.offsets} added" if args.offsets else ""
    print(f"wrote {args.out}: mean of {len(members)} files, {members[0].n:,} images{added}")


if __name__ == "__main__":
    main()
