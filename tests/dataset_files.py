"""Small datasets written in the real on-disk formats torchvision reads.

CIFAR-10: cifar-10-batches-py/data_batch_1..5, test_batch (pickled dicts with
`data` uint8 [n, 3072], channel-major 32x32 images, and `labels`) and
batches.meta (`label_names`). CIFAR-100: cifar-100-python/train and test (the
same, with `fine_labels` and `coarse_labels` instead of `labels`) and meta
(`fine_label_names`, `coarse_label_names`). MNIST and Fashion-MNIST: the idx files under
<Name>/raw/. Images depend on their class (a class colour plus noise) so that
models can learn them.
"""

import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


def _class_images(labels, shape, rng, n_classes=10) -> np.ndarray:
    """uint8 images [n, *shape]: a per-class base level plus noise."""
    base = np.linspace(30, 220, n_classes)[np.asarray(labels)]
    noise = rng.normal(0, 25, size=(len(labels), *shape))
    return np.clip(base.reshape(-1, *[1] * len(shape)) + noise, 0, 255).astype(np.uint8)


def write_cifar10(root, per_batch: int = 12, n_test: int = 20, seed: int = 0):
    """CIFAR-10 files under root/cifar-10-batches-py; returns (train labels, test labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = np.arange(5 * per_batch) % 10
    rng.shuffle(train_labels)
    for batch in range(5):
        labels = train_labels[batch * per_batch:(batch + 1) * per_batch]
        _write_cifar_batch(folder / f"data_batch_{batch + 1}", labels, rng,
                           f"training batch {batch + 1} of 5")
    test_labels = np.arange(n_test) % 10
    _write_cifar_batch(folder / "test_batch", test_labels, rng, "testing batch 1 of 1")
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_cases_per_batch": per_batch,
                     "num_vis": 3072}, handle, protocol=2)
    return train_labels, test_labels


def _write_cifar_batch(path, labels, rng, name):
    images = _class_images(labels, (3, 32, 32), rng).reshape(len(labels), 3072)
    entry = {"batch_label": name, "labels": [int(label) for label in labels], "data": images,
             "filenames": [f"image_{k}.png" for k in range(len(labels))]}
    with open(path, "wb") as handle:
        pickle.dump(entry, handle, protocol=2)


def write_cifar100(root, n_train: int = 30, n_test: int = 10, seed: int = 0, train_fine=None):
    """CIFAR-100 files under root/cifar-100-python; returns (train, test) fine labels.

    Labels run up to 99 and the coarse labels (superclasses, fine // 5 here) differ
    from the fine ones, so a reader that takes the wrong key or assumes 10 classes
    is caught. `train_fine` sets the training points' fine labels (n_train ignored).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    train = rng.permutation(np.arange(n_train) * 7 % 100) if train_fine is None \
        else np.asarray(train_fine)
    fine = {"train": train, "test": np.arange(n_test)[::-1] * 11 % 100}
    for name, labels in fine.items():
        images = _class_images(labels, (3, 32, 32), rng, n_classes=100)
        entry = {"filenames": [f"image_{k}.png" for k in range(len(labels))],
                 "batch_label": f"{name}ing batch 1 of 1",
                 "fine_labels": [int(label) for label in labels],
                 "coarse_labels": [int(label) // 5 for label in labels],
                 "data": images.reshape(len(labels), 3072)}
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": [f"fine_{k}" for k in range(100)],
                     "coarse_label_names": [f"coarse_{k}" for k in range(20)]}, handle,
                    protocol=2)
    return fine["train"], fine["test"]


def write_mnist(root, class_name: str = "MNIST", n_train: int = 50, n_test: int = 20,
                seed: int = 0):
    """idx files under root/<class_name>/raw; returns (train labels, test labels)."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / class_name / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    train_labels = np.arange(n_train) % 10
    test_labels = np.arange(n_test) % 10
    for prefix, labels in (("train", train_labels), ("t10k", test_labels)):
        images = _class_images(labels, (28, 28), rng)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, len(labels), 28, 28) + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())
    return train_labels, test_labels
