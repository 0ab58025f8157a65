"""A dataset's shapes from its config alone: no file read, no torch (for `klomflow budget`).

digits: the 1,797 images of scikit-learn's set, split by `digits_split` exactly as
`load_digits` splits them; the torchvision datasets: their published split sizes. A
published folder (models.source) scores CIFAR-10, so its shapes are CIFAR-10's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from klomflow.data.datasets import digits_split

# scikit-learn's load_digits: 1,797 images of 8 x 8 pixels, 10 classes.
DIGITS_IMAGES = 1797

# name: (training points, validation points, classes, input shape) as torchvision ships them.
TORCHVISION_SHAPES = {
    "cifar10": (50_000, 10_000, 10, (3, 32, 32)),
    "cifar100": (50_000, 10_000, 100, (3, 32, 32)),
    "mnist": (60_000, 10_000, 10, (1, 28, 28)),
    "fashion_mnist": (60_000, 10_000, 10, (1, 28, 28)),
}


@dataclass(frozen=True)
class DatasetShape:
    n_train: int
    n_val: int
    n_classes: int
    input_shape: tuple

    @property
    def n_points(self) -> int:
        """Evaluation points: the training points, then the validation points."""
        return self.n_train + self.n_val

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)


def dataset_shape(dataset_config: dict) -> DatasetShape:
    """The shapes of the dataset a config's `dataset` section names."""
    name = dataset_config["name"]
    if name == "digits":
        train, val = digits_split(
            DIGITS_IMAGES,
            dataset_config.get("val_fraction", 0.2),
            dataset_config.get("split_seed", 0),
        )
        return DatasetShape(len(train), len(val), 10, (64,))
    if name not in TORCHVISION_SHAPES:
        raise ValueError(f"dataset.name: no known shapes for {name!r}")
    n_train, n_val, n_classes, input_shape = TORCHVISION_SHAPES[name]
    if name == "cifar100" and dataset_config.get("labels", "fine") == "coarse":
        n_classes = 20
    return DatasetShape(n_train, n_val, n_classes, input_shape)
