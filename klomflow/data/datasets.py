"""Datasets as tensors: an embedded default (scikit-learn digits) and torchvision loaders.

Every dataset becomes float32 inputs and int64 labels for a training split
and a validation split. Evaluation points are the training points, in
training-index order, followed by the validation points.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: config checks run without it
    import torch
from klomflow.data.published.layout import CIFAR10_MEAN, CIFAR10_STD

TORCHVISION_DATASETS = {
    # name: (torchvision class name, per-channel mean, per-channel std)
    # CIFAR-10 uses the published benchmark's normalisation (its std is not the
    # pixel std, 0.247/0.243/0.261), so that self-trained and published models
    # see the same inputs.
    "cifar10": ("CIFAR10", CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ("MNIST", (0.1307,), (0.3081,)),
    "fashion_mnist": ("FashionMNIST", (0.2860,), (0.3530,)),
}
DATASETS = ("digits", *TORCHVISION_DATASETS)


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # [n_train, *input_shape] float32
    train_y: torch.Tensor  # [n_train] int64
    val_x: torch.Tensor  # [n_val, *input_shape] float32
    val_y: torch.Tensor  # [n_val] int64
    n_classes: int
    # Where each point came from in the source data (recorded in points.parquet).
    train_source_index: np.ndarray
    val_source_index: np.ndarray
    # CIFAR-100 with `dataset.labels: coarse`: the fine label of each point (the
    # `subclass` column of points.parquet); None for every other dataset.
    train_subclass: np.ndarray | None = None
    val_subclass: np.ndarray | None = None
    # A manipulated training set (klomflow/data/manipulations.py): train_y holds the labels
    # the models train on, train_clean_y the true ones, train_manipulation the name of the
    # manipulation that chose each point ("" if none). Probe points (the triggered
    # validation images) follow the validation points among the evaluation points.
    train_clean_y: np.ndarray | None = None
    train_manipulation: np.ndarray | None = None
    probe_x: torch.Tensor | None = None  # [n_probe, *input_shape] float32
    probe_y: torch.Tensor | None = None  # [n_probe] int64, true labels
    probe_val_index: np.ndarray | None = None  # the validation point each probe copies
    probe_manipulation: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple:
        return tuple(self.train_x.shape[1:])

    @property
    def n_train(self) -> int:
        return len(self.train_y)

    @property
    def eval_x(self) -> torch.Tensor:
        """All evaluation points: training points first, then validation points (then the
        probe points of a manipulated dataset)."""
        import torch

        probes = [] if self.probe_x is None else [self.probe_x]
        return torch.cat([self.train_x, self.val_x, *probes])

    @property
    def eval_y(self) -> torch.Tensor:
        """The evaluation points' labels: the trained ones for training points."""
        import torch

        probes = [] if self.probe_y is None else [self.probe_y]
        return torch.cat([self.train_y, self.val_y, *probes])

    def to(self, device) -> Dataset:
        import dataclasses

        moved = {
            name: getattr(self, name).to(device)
            for name in ("train_x", "train_y", "val_x", "val_y", "probe_x", "probe_y")
            if getattr(self, name) is not None
        }
        return dataclasses.replace(self, **moved)


def load_dataset(dataset_config: dict) -> Dataset:
    """Load the dataset a config's `dataset` section names."""
    name = dataset_config["name"]
    if name == "digits":
        return load_digits(dataset_config.get("val_fraction", 0.2),
                           dataset_config.get("split_seed", 0))
    if name in TORCHVISION_DATASETS:
        return load_torchvision(name, dataset_config["data_dir"],
                                dataset_config.get("verify_checksums", True),
                                labels=dataset_config.get("labels", "fine"))
    raise ValueError(f"dataset.name: unknown dataset {name!r}; choose one of {DATASETS}")


def load_digits(val_fraction: float, split_seed: int) -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped inside the package).

    The train/validation split is a permutation drawn from `split_seed`, so it
    is fixed for a given config and recorded in points.parquet.
    """
    import torch

    pixels, target = digits_arrays()
    x = torch.tensor(pixels / 16.0, dtype=torch.float32)  # pixel values are 0..16
    y = torch.tensor(target, dtype=torch.int64)
    train_index, val_index = digits_split(len(y), val_fraction, split_seed)
    return Dataset(
        name="digits",
        train_x=x[train_index],
        train_y=y[train_index],
        val_x=x[val_index],
        val_y=y[val_index],
        n_classes=10,
        train_source_index=train_index,
        val_source_index=val_index,
    )


def digits_arrays():
    """(pixels [1797, 64] float64, labels [1797] int): sklearn.datasets.load_digits' data.

    Read from the file scikit-learn ships, as its loader reads it (np.loadtxt of
    data/digits.csv.gz, the last column the label), without importing
    scikit-learn: that import costs about a second, in every training and
    unlearning job. Falls back to scikit-learn's loader if the file has moved.
    """
    import gzip
    from importlib.util import find_spec

    spec = find_spec("sklearn")  # a top-level package: found, not imported
    path = (Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
            if spec is not None and spec.origin else None)
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()
        return bunch.data, bunch.target
    with gzip.open(path, mode="rt", encoding="utf-8") as handle:
        data = np.loadtxt(handle, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int, copy=False)


def digits_split(n_images: int, val_fraction: float, split_seed: int):
    """(training indices, validation indices), sorted, of a seeded permutation."""
    order = np.random.default_rng(split_seed).permutation(n_images)
    n_val = int(round(val_fraction * n_images))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# Where torchvision keeps each dataset's training labels, read without torch for the
# config checks (planning the DAG must not import torch): (files, how to read one).
def _cifar_labels(key):
    def read(path):
        import pickle

        with open(path, "rb") as handle:
            return np.asarray(pickle.load(handle, encoding="latin1")[key], dtype=np.int64)
    return read


def _idx_labels(path):
    data = Path(path).read_bytes()
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def training_labels(dataset_config: dict, fine: bool = False) -> np.ndarray:
    """The training labels, without torch; FileNotFoundError when the files are absent.

    CIFAR-100 with `dataset.labels: coarse` trains on the 20 superclasses: its
    labels are the coarse ones unless `fine` asks for the 100 fine classes.
    """
    name = dataset_config["name"]
    if name == "digits":
        _, target = digits_arrays()
        train_index, _ = digits_split(len(target), dataset_config.get("val_fraction", 0.2),
                                      dataset_config.get("split_seed", 0))
        return target[train_index].astype(np.int64)
    root = Path(dataset_config["data_dir"])
    if name == "cifar10":
        files = [root / "cifar-10-batches-py" / f"data_batch_{k}" for k in range(1, 6)]
        read = _cifar_labels("labels")
    elif name == "cifar100":
        coarse = dataset_config.get("labels", "fine") == "coarse" and not fine
        files = [root / "cifar-100-python" / "train"]
        read = _cifar_labels("coarse_labels" if coarse else "fine_labels")
    elif name in TORCHVISION_DATASETS:
        class_name = TORCHVISION_DATASETS[name][0]
        files, read = [root / class_name / "raw" / "train-labels-idx1-ubyte"], _idx_labels
    else:
        raise ValueError(f"dataset.name: unknown dataset {name!r}; choose one of {DATASETS}")
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        raise FileNotFoundError(f"dataset {name!r}: missing {missing[0]}")
    return np.concatenate([read(path) for path in files])


def _without_checksums(dataset_class):
    """`dataset_class` checking that its files exist but not their MD5 sums.

    Torchvision's CIFAR classes refuse files whose MD5 differs from the
    published archive's, so files written in the CIFAR format by anyone else
    (the tests' small ones) need this; MNIST-like classes only check existence.
    """
    if not hasattr(dataset_class, "train_list"):
        return dataset_class
    unchecked = [[file_name, None] for file_name, _ in dataset_class.train_list]
    return type(f"Unverified{dataset_class.__name__}", (dataset_class,), {
        "train_list": unchecked,
        "test_list": [[file_name, None] for file_name, _ in dataset_class.test_list],
        "meta": dict(dataset_class.meta, md5=None),
    })


def _torchvision_split(name: str, data_dir: str, train: bool, download: bool = False,
                       verify_checksums: bool = True):
    import torchvision

    class_name = TORCHVISION_DATASETS[name][0]
    root = Path(data_dir)
    dataset_class = getattr(torchvision.datasets, class_name)
    if not verify_checksums and not download:
        dataset_class = _without_checksums(dataset_class)
    try:
        return dataset_class(root=root, train=train, download=download)
    except RuntimeError as error:  # torchvision's "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"dataset {name!r} not found under dataset.data_dir={str(root)!r} ({error}); "
            f"run `snakemake download_data` to download it"
        ) from error


def _to_tensors(name: str, split):
    import torch

    _, mean, std = TORCHVISION_DATASETS[name]
    images = torch.as_tensor(np.asarray(split.data))
    if images.ndim == 3:  # MNIST-like: [n, H, W] -> [n, 1, H, W]
        images = images.unsqueeze(1)
    else:  # CIFAR: [n, H, W, C] -> [n, C, H, W]
        images = images.permute(0, 3, 1, 2)
    x = images.float() / 255.0
    x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    y = torch.as_tensor(np.asarray(split.targets), dtype=torch.int64)
    return x.contiguous(), y


def load_torchvision(name: str, data_dir: str, verify_checksums: bool = True,
                     labels: str = "fine") -> Dataset:
    """A torchvision dataset from `data_dir`: its train split trains, its test split validates.

    verify_checksums=False (config `dataset.verify_checksums: false`) accepts
    CIFAR files whose MD5 sums differ from the published ones, e.g. small files
    in the same format; the default refuses them, as torchvision does.
    labels="coarse" (CIFAR-100 only) trains on the 20 superclasses and keeps the
    fine label as the subclass: the Living-17 setting on data torchvision reads.
    """
    splits = [_torchvision_split(name, data_dir, train=train, verify_checksums=verify_checksums)
              for train in (True, False)]
    train_x, train_y = _to_tensors(name, splits[0])
    val_x, val_y = _to_tensors(name, splits[1])
    n_classes = 100 if name == "cifar100" else 10
    subclasses = (None, None)
    if labels == "coarse":
        if name != "cifar100":
            raise ValueError(f"dataset.labels: coarse labels exist for cifar100 only, not {name!r}")
        import torch

        # torchvision reads only `fine_labels`; the coarse ones sit in the same pickles.
        root = Path(data_dir) / "cifar-100-python"
        coarse = [_cifar_labels("coarse_labels")(root / part) for part in ("train", "test")]
        subclasses = (train_y.numpy().copy(), val_y.numpy().copy())
        for fine, superclass, split in zip(subclasses, coarse, ("train", "test")):
            if len(superclass) != len(fine):
                raise ValueError(f"{root / split}: {len(superclass)} coarse labels for "
                                 f"{len(fine)} images")
        train_y, val_y = (torch.as_tensor(values, dtype=torch.int64) for values in coarse)
        n_classes = 20
    return Dataset(
        name=name,
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        n_classes=n_classes,
        train_source_index=np.arange(len(train_y)),
        val_source_index=np.arange(len(val_y)),
        train_subclass=subclasses[0],
        val_subclass=subclasses[1],
    )


class DownloadError(RuntimeError):
    """A dataset could not be downloaded; the message says how to put its files in by hand."""


def manual_download(name: str, data_dir: str) -> str:
    """Where to fetch a torchvision dataset's files by hand and where to put them.

    The addresses and file names are torchvision's own (its `url`/`filename`, or its
    `mirrors` and `resources`), so they follow the installed version. Its download
    skips a file already in place whose MD5 matches and unpacks it, so the advice is
    to put the files there unchanged and run the download rule again.
    """
    import torchvision

    class_name = TORCHVISION_DATASETS[name][0]
    dataset_class = getattr(torchvision.datasets, class_name)
    root = Path(data_dir)
    rerun = "then run `snakemake --cores 1 download_data` again, which checks and unpacks"
    if hasattr(dataset_class, "base_folder"):  # CIFAR: one archive
        return (f"fetch {dataset_class.url} on a machine with network and put "
                f"{dataset_class.filename} in {root}/ as it is; {rerun} it. Or unpack it there "
                f"yourself, so that {root / dataset_class.base_folder}/ holds its files (the "
                "workflow reads them without this rule).")
    files = [file_name for file_name, _ in dataset_class.resources]  # MNIST-like: four files
    folder = root / class_name / "raw"
    return (f"fetch {', '.join(files)} from one of {', '.join(dataset_class.mirrors)} on a "
            f"machine with network and put them in {folder}/ as they are; {rerun} them. Or "
            f"gunzip them there yourself (the workflow reads {folder}/ without this rule).")


def download(name: str, data_dir: str) -> None:
    """Fetch a torchvision dataset into `data_dir` (the explicit download rule only).

    DownloadError, saying what failed and where to put the files by hand, when the
    download fails (no network, a server that refuses, a corrupted file).
    """
    if name not in TORCHVISION_DATASETS:
        raise ValueError(f"dataset.name: {name!r} is embedded or unknown; nothing to download")
    import torchvision

    dataset_class = getattr(torchvision.datasets, TORCHVISION_DATASETS[name][0])
    for train in (True, False):
        try:
            dataset_class(root=Path(data_dir), train=train, download=True)
        # URLError and socket errors are OSErrors; torchvision raises RuntimeError once
        # every mirror failed or a file's MD5 differs.
        except (OSError, RuntimeError) as error:
            reason = " ".join(str(error).split()) or type(error).__name__
            raise DownloadError(
                f"dataset {name!r}: downloading into dataset.data_dir={str(data_dir)!r} failed "
                f"({type(error).__name__}: {reason}). Without network, "
                f"{manual_download(name, data_dir)}"
            ) from error


def points_table(dataset: Dataset):
    """One row per evaluation point: point, split, label, source_index (and, for
    CIFAR-100 with coarse labels, subclass: the fine label).

    A manipulated dataset (klomflow/data/manipulations.py) adds `trained_label` (the label
    the originals saw), `manipulated` and `manipulation` (its name, "" if none); `label`
    is then the true label, the one margins are computed with. Its probe points (split
    `val_triggered`) follow the validation points; their source_index is the validation
    point they copy.
    """
    import pandas as pd

    n_train, n_val = dataset.n_train, len(dataset.val_y)
    n_probe = 0 if dataset.probe_y is None else len(dataset.probe_y)
    labels = dataset.eval_y.cpu().numpy().astype(np.int64)
    sources = [dataset.train_source_index, dataset.val_source_index]
    if n_probe:
        sources.append(dataset.probe_val_index)
    table = pd.DataFrame(
        {
            "point": np.arange(n_train + n_val + n_probe, dtype=np.int64),
            "split": ["train"] * n_train + ["val"] * n_val + ["val_triggered"] * n_probe,
            "label": labels,
            "source_index": np.concatenate(sources).astype(np.int64),
        }
    )
    if dataset.train_subclass is not None:
        probes = [] if not n_probe else [dataset.val_subclass[dataset.probe_val_index]]
        table["subclass"] = np.concatenate([dataset.train_subclass, dataset.val_subclass,
                                            *probes]).astype(np.int64)
    if dataset.train_clean_y is not None:
        table["trained_label"] = labels
        table.loc[:n_train - 1, "label"] = dataset.train_clean_y
        owner = np.concatenate([dataset.train_manipulation, [""] * n_val,
                                [] if not n_probe else dataset.probe_manipulation])
        table["manipulation"] = pd.Series(owner.astype(str), dtype="string")
        table["manipulated"] = (table["split"] == "train") & (table["manipulation"] != "")
    return table


def points_without_dataset(labels, n_train: int):
    """The points table from labels alone: training points, then validation points, in order."""
    import pandas as pd

    labels = np.asarray(labels, dtype=np.int64)
    return pd.DataFrame({
        "point": np.arange(len(labels), dtype=np.int64),
        "split": ["train"] * n_train + ["val"] * (len(labels) - n_train),
        "label": labels,
        "source_index": np.concatenate([np.arange(n_train), np.arange(len(labels) - n_train)]),
    })
