"""The datasets' images as stored, for pictures of points (the explorer page)."""

from __future__ import annotations

import numpy as np

from klomflow.data.datasets import (
    DATASETS,
    TORCHVISION_DATASETS,
    _torchvision_split,
    digits_arrays,
)


def raw_images(dataset_config: dict) -> tuple[np.ndarray, np.ndarray]:
    """(training-source images, validation-source images) as uint8 [n, H, W] or [n, H, W, 3].

    Indexed by points.parquet's `source_index` (digits: both are the 1,797 images, ink dark
    on white). FileNotFoundError when a torchvision dataset's files are absent.
    """
    name = dataset_config["name"]
    if name == "digits":
        pixels, _ = digits_arrays()
        images = (255 - pixels * 255 / 16).round().astype(np.uint8).reshape(-1, 8, 8)
        return images, images
    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"dataset.name: unknown dataset {name!r}; choose one of {DATASETS}")
    splits = [_torchvision_split(name, dataset_config["data_dir"], train=train,
                                 verify_checksums=dataset_config.get("verify_checksums", True))
              for train in (True, False)]
    return tuple(np.asarray(split.data, dtype=np.uint8) for split in splits)
