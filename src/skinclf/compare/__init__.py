"""Paired comparisons of two models on the same images (`skinclf compare`): balanced accuracy
with stratified-bootstrap intervals, a paired bootstrap of the difference, and the numbers
abstention needs (AURC/AUGRC of the maximum softmax probability, OOD detection).

    from skinclf.compare import compare
    result = compare(Path("runs/cv5-pair"), Path("runs/cv5-default"), external="isic2018-test-dev")
"""

from skinclf.compare.core import compare, kind_of, run_predictions
from skinclf.compare.cv import compare_cvs
from skinclf.compare.summary import compare_files, ood_summary, paired, summarise

__all__ = [
    "compare",
    "compare_cvs",
    "compare_files",
    "kind_of",
    "ood_summary",
    "paired",
    "run_predictions",
    "summarise",
]
