"""The names in an exported model folder (a package, `skinclf export`), each named once, with its
path class `PackageFolder`: the manifest, the model card (JSON and Markdown), the policy and the
feature statistics its OOD gate reads, the ONNX graph, and members/<i>/ (member i's checkpoint
beside its run's files, `TrainingRun`'s names). The manifest names the package's files by their
path inside the folder (`PackageFolder.name`); what it says is `skinclf.predictor.manifest`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skinclf.contracts.run_folder import FEATURE_STATS_FILE, POLICY_FILE, InFolder

MANIFEST_FILE = "skinclf-model.json"  # marks a package
CARD_FILE = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
ONNX_FILE = "model.onnx"  # a single model's graph; an ensemble's: one per member folder
MEMBERS_DIR = "members"  # members/<i>/: member i
MEMBER_CHECKPOINT = "classifier.ckpt"  # in a member folder: the classifier and its spec


@dataclass(frozen=True)
class PackageFolder:
    """The files of an exported model folder, named once: what export writes and the predictor,
    predict and the server read (the manifest says which of the optional ones it has)."""

    path: Path
    manifest = InFolder(MANIFEST_FILE)
    card = InFolder(CARD_FILE)
    card_markdown = InFolder(CARD_MARKDOWN)
    policy = InFolder(POLICY_FILE)
    feature_stats = InFolder(FEATURE_STATS_FILE)
    onnx = InFolder(ONNX_FILE)

    def member(self, i: int) -> Path:
        """members/<i>/: member i's checkpoint, with its run's config, split and provenance."""
        return self.path / MEMBERS_DIR / str(i)

    def member_checkpoint(self, i: int) -> Path:
        return self.member(i) / MEMBER_CHECKPOINT

    def member_onnx(self, i: int) -> Path:
        """Member i's ONNX graph (in an ensemble's package)."""
        return self.member(i) / ONNX_FILE

    def name(self, path: Path) -> str:
        """A file of the package as the manifest names it: its path inside the folder, with /."""
        return path.relative_to(self.path).as_posix()
