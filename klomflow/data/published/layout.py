"""The two published layouts, KLOM-models and EasyDUB-dataset: their constants, forget
sets and file paths (`Source`). Path helpers only: planning lists a job's inputs with them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LAYOUTS = ("klom_models", "easydub")
# KLOM-models' oracle folders, preferred first: `oracle_models/` in the code that downloads
# them (data-unlearning-bench moved there days after its fix "oracles were not ignoring
# forget set"), `oracles/` on the dataset card. A snapshot may hold both.
ORACLE_ROOTS = ("oracle_models", "oracles")
# The published checkpoints are after epoch index 23 (0-based) of 24 epochs.
EPOCH = 23
# Published forget sets (docs/published.md): id -> (size, sum of indices, sha256[:16] of the file).
PUBLISHED_FORGET_SETS = {
    1: (10, 278580, "343e9a739404209b"),
    2: (100, 2285851, "243c897f9120f354"),
    3: (1000, 24768036, "ef08a53dea26090e"),
    4: (10, 265737, "27d014a6eff179de"),
    5: (100, 2572263, "3aa610ab3dee7fba"),
    6: (500, 12071484, "08029e0253a1ffc6"),
    7: (10, 277784, "0fae3e72d6c9ee88"),
    8: (100, 2550554, "521bf3e822a0880f"),
    9: (500, 12894465, "05a2e1ad57b8dadf"),
    10: (100, 2307457, "197fd5153bf80edc"),
}
# The published input normalisation of CIFAR-10 (its models were trained and
# evaluated with it; klomflow's own CIFAR-10 training uses it too).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
# Stored margins must follow from stored logits or weights within MARGIN_ATOL + MARGIN_RTOL *
# |margin|. EasyDUB computed each split in its own pass under bfloat16 autocast, so correct
# files differ by about 1e-2; the checkpoint check allows for TF32 convolutions on the GPU
# that wrote the files. Margins of other points or labels differ by whole units.
MARGIN_ATOL = 0.05
MARGIN_RTOL = 0.01


def margins_agree(stored, computed) -> np.ndarray:
    """Per point: `computed` reproduces the `stored` margin within the tolerance above."""
    stored = np.asarray(stored, dtype=np.float64)
    return np.abs(np.asarray(computed, dtype=np.float64) - stored) <= (
        MARGIN_ATOL + MARGIN_RTOL * np.abs(stored))


class PublishedError(ValueError):
    """A published folder lacks a file, holds too few models, or fails a check."""


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Source:
    """A published folder of one layout; the paths of every file the workflow reads."""

    layout: str
    root: Path

    @classmethod
    def from_setting(cls, source: dict | None, base_dir=".") -> Source | None:
        """The published source of a config's `models.source`, or None when models are
        trained here."""
        source = source or {"layout": "train"}
        if source["layout"] == "train":
            return None
        root = Path(source["path"])
        return cls(source["layout"], root if root.is_absolute() else Path(base_dir) / root)

    # --- forget sets ---------------------------------------------------------------------------

    def forget_set_file(self, forget_id: int) -> Path:
        if self.layout == "klom_models":
            return self.root / "forget_set_indices" / "CIFAR10" / f"forget_set_{forget_id}.npy"
        return self.root / "forget_sets" / "cifar10" / f"forget_set_{forget_id}.npy"

    # --- originals -----------------------------------------------------------------------------

    def original_checkpoint(self, model_id: int) -> Path:
        if self.layout == "klom_models":
            return self.root / "full_models" / "CIFAR10" / f"sd_{model_id}____epoch_{EPOCH}.pt"
        return (self.root / "models" / "cifar10" / "pretrain" / "resnet9"
                / f"id_{model_id}_epoch_{EPOCH}.pt")

    def _easydub_file(self, kind: str, role: str, part: str, model_id: int) -> Path:
        # {logits,margins}/cifar10/{pretrain | oracle/forget_z}/{part}/resnet9/id_{m}_epoch_23.npy
        # (pretrain: {retain, val, forget_z}; oracle: forget_z/{retain, forget, val}).
        return (self.root / kind / "cifar10" / role / part / "resnet9"
                / f"id_{model_id}_epoch_{EPOCH}.npy")

    def original_files(self, n_models: int, kind: str = "margins") -> dict[str, list[Path]]:
        """{"train": files, "val": files} of the originals' margins (or logits).

        KLOM-models margins: the two `*_margins_all.pt` files when present, else
        the per-model logits. EasyDUB: one file per model and split.
        """
        if self.layout == "klom_models":
            folder = self.root / "full_models" / "CIFAR10"
            if kind == "margins" and (folder / "train_margins_all.pt").exists():
                return {split: [folder / f"{split}_margins_all.pt"] for split in ("train", "val")}
            return {split: [folder / f"{split}_logits_{k}.pt" for k in range(n_models)]
                    for split in ("train", "val")}
        return {
            "train": [self._easydub_file(kind, "pretrain", "retain", k) for k in range(n_models)],
            "val": [self._easydub_file(kind, "pretrain", "val", k) for k in range(n_models)],
        }

    def original_forget_file(self, forget_id: int, model_id: int = 0) -> Path | None:
        """EasyDUB's originals' margins on the forget points (in the layout's forget order)."""
        if self.layout != "easydub":
            return None
        return self._easydub_file("margins", "pretrain", f"forget_{forget_id}", model_id)

    # --- oracles -------------------------------------------------------------------------------

    def _oracle_files_in(self, root: Path, forget_id: int) -> list[Path]:
        """The files whose presence shows that `root` holds a forget set's oracles."""
        name = f"forget_set_{forget_id}"
        return [root / "CIFAR10" / "only_margins" / name / "train_margins_all.pt",
                root / "CIFAR10" / name / "train_logits_0.pt"]

    def oracle_roots_holding(self, forget_id: int) -> list[Path]:
        """KLOM-models' oracle folders that hold forget set `forget_id`, preferred first."""
        roots = [self.root / name for name in ORACLE_ROOTS]
        return [root for root in roots
                if any(path.exists() for path in self._oracle_files_in(root, forget_id))]

    def oracle_root(self, forget_id: int) -> Path:
        """KLOM-models' oracle folder of one forget set: `oracle_models/` (the code that
        downloads them) where it holds the set's files, else `oracles/` (the dataset card)."""
        holding = self.oracle_roots_holding(forget_id)
        return holding[0] if holding else self.root / ORACLE_ROOTS[0]

    def oracle_root_warning(self, forget_id: int) -> str | None:
        """A warning naming both folders' files and their SHA-256 when both hold the set."""
        holding = self.oracle_roots_holding(forget_id)
        if len(holding) < 2:
            return None
        files = [next(path for path in self._oracle_files_in(root, forget_id) if path.exists())
                 for root in holding]
        digests = [file_sha256(path) for path in files]
        same = "the same bytes" if len(set(digests)) == 1 else "different files"
        return (f"WARNING: both {holding[0].name}/ and {holding[1].name}/ hold the oracles of "
                f"forget_set_{forget_id}; reading {holding[0].name}/ ({files[0]}, SHA-256 "
                f"{digests[0]}), not {holding[1].name}/ ({files[1]}, SHA-256 {digests[1]}): "
                f"{same}. data-unlearning-bench moved its oracles to oracle_models/ after its "
                f"fix \"oracles were not ignoring forget set\"; remove the folder you do not "
                f"mean to score against")

    def oracle_files(self, forget_id: int, n_models: int,
                     kind: str = "margins") -> dict[str, list[Path]]:
        """The oracles' margin (or logit) files of one forget set, by split.

        KLOM-models: {"train", "val"} (train covers all training points, the
        forget points included). EasyDUB: {"retain", "forget", "val"}.
        """
        if self.layout == "klom_models":
            root = self.oracle_root(forget_id) / "CIFAR10"
            all_files = root / "only_margins" / f"forget_set_{forget_id}"
            if kind == "margins" and (all_files / "train_margins_all.pt").exists():
                return {split: [all_files / f"{split}_margins_all.pt"]
                        for split in ("train", "val")}
            folder = root / f"forget_set_{forget_id}"
            return {split: [folder / f"{split}_logits_{k}.pt" for k in range(n_models)]
                    for split in ("train", "val")}
        role = f"oracle/forget_{forget_id}"
        return {part: [self._easydub_file(kind, role, part, k) for k in range(n_models)]
                for part in ("retain", "forget", "val")}

    def uses_logits(self, files: dict[str, list[Path]]) -> bool:
        return any(path.suffix == ".pt" and "_logits_" in path.name
                   for paths in files.values() for path in paths)

    def describe(self) -> dict:
        return {"layout": self.layout, "path": str(self.root)}


