"""The class list every command shares (DESIGN.md: always this order, lower case)."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
NUM_CLASSES = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}

CLASS_NAMES: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus",
    "vasc": "vascular lesion",
}

# PAD-UFES-20 `diagnostic` -> HAM10000 class; SCC has none (semantic out-of-distribution).
PAD_UFES_TO_HAM: dict[str, str] = {
    "ACK": "akiec",
    "BCC": "bcc",
    "MEL": "mel",
    "NEV": "nv",
    "SEK": "bkl",
}
PAD_UFES_SEMANTIC_OOD: frozenset[str] = frozenset({"SCC"})
