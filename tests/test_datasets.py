"""Torchvision datasets read from files in their real on-disk formats."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dataset_files import write_cifar10, write_cifar100, write_mnist

from klomflow.config import ConfigError, validate
from klomflow.data.datasets import load_dataset, points_table, training_labels
from klomflow.forget_sets.kinds import make_forget_set

REPOSITORY = Path(__file__).resolve().parents[1]


def test_cifar_format_files_load_without_checksums(tmp_path):
    train_labels, test_labels = write_cifar10(tmp_path, per_batch=6, n_test=10)
    dataset = load_dataset({"name": "cifar10", "data_dir": str(tmp_path),
                            "verify_checksums": False})
    assert dataset.train_x.shape == (30, 3, 32, 32) and dataset.val_x.shape == (10, 3, 32, 32)
    assert dataset.n_classes == 10
    # Torchvision's order: batches 1..5 in turn, then the test batch.
    np.testing.assert_array_equal(dataset.train_y.numpy(), train_labels)
    np.testing.assert_array_equal(dataset.val_y.numpy(), test_labels)
    # Normalised per channel with the published benchmark's CIFAR-10 mean and std.
    with open(tmp_path / "cifar-10-batches-py/data_batch_1", "rb") as handle:
        first = pickle.load(handle, encoding="latin1")["data"][0].astype(np.float32)
    mean = np.array([0.4914, 0.4822, 0.4465])[:, None, None]
    std = np.array([0.2023, 0.1994, 0.2010])[:, None, None]
    expected = (first.reshape(3, 32, 32) / 255.0 - mean) / std
    np.testing.assert_allclose(dataset.train_x[0].numpy(), expected, atol=1e-5)
    points = points_table(dataset)
    assert list(points["split"]) == ["train"] * 30 + ["val"] * 10


def test_cifar100_format_files_load_with_fine_labels(tmp_path):
    train_labels, test_labels = write_cifar100(tmp_path, n_train=30, n_test=10)
    assert train_labels.max() > 9  # labels a 10-class reader could not hold
    dataset = load_dataset({"name": "cifar100", "data_dir": str(tmp_path),
                            "verify_checksums": False})
    assert dataset.train_x.shape == (30, 3, 32, 32) and dataset.val_x.shape == (10, 3, 32, 32)
    assert dataset.n_classes == 100
    # The 100 fine labels, not the 20 coarse ones; file order kept.
    np.testing.assert_array_equal(dataset.train_y.numpy(), train_labels)
    np.testing.assert_array_equal(dataset.val_y.numpy(), test_labels)
    # Channel-major rows, normalised per channel with CIFAR-100's own mean and std.
    with open(tmp_path / "cifar-100-python/test", "rb") as handle:
        last = pickle.load(handle, encoding="latin1")["data"][-1].astype(np.float32)
    mean = np.array([0.5071, 0.4865, 0.4409])[:, None, None]
    std = np.array([0.2673, 0.2564, 0.2762])[:, None, None]
    expected = (last.reshape(3, 32, 32) / 255.0 - mean) / std
    np.testing.assert_allclose(dataset.val_x[-1].numpy(), expected, atol=1e-5)
    assert list(points_table(dataset)["label"]) == [*train_labels, *test_labels]


def test_cifar100_coarse_labels_train_on_superclasses_and_keep_the_subclass(tmp_path):
    train_fine, test_fine = write_cifar100(tmp_path, n_train=30, n_test=10)
    config = {"name": "cifar100", "data_dir": str(tmp_path), "verify_checksums": False,
              "labels": "coarse"}
    dataset = load_dataset(config)
    assert dataset.n_classes == 20
    # The coarse labels of the pickles (fine // 5 in these files), not the fine ones.
    np.testing.assert_array_equal(dataset.train_y.numpy(), train_fine // 5)
    np.testing.assert_array_equal(dataset.val_y.numpy(), test_fine // 5)
    points = points_table(dataset)
    np.testing.assert_array_equal(points["subclass"], [*train_fine, *test_fine])
    np.testing.assert_array_equal(points["label"], [*train_fine // 5, *test_fine // 5])
    # The torch-free reader used to check configs agrees, and reads fine labels on request.
    np.testing.assert_array_equal(training_labels(config), train_fine // 5)
    np.testing.assert_array_equal(training_labels(config, fine=True), train_fine)
    # The default stays fine, without a subclass column.
    assert "subclass" not in points_table(load_dataset(config | {"labels": "fine"}))


def test_cifar_checksums_are_checked_by_default(tmp_path):
    write_cifar10(tmp_path, per_batch=4, n_test=4)
    with pytest.raises(FileNotFoundError, match="not found or corrupted"):
        load_dataset({"name": "cifar10", "data_dir": str(tmp_path)})


def test_missing_cifar_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_data"):
        load_dataset({"name": "cifar10", "data_dir": str(tmp_path), "verify_checksums": False})


@pytest.mark.parametrize("name, class_name", [("mnist", "MNIST"),
                                              ("fashion_mnist", "FashionMNIST")])
def test_mnist_format_files_load(tmp_path, name, class_name):
    train_labels, test_labels = write_mnist(tmp_path, class_name, n_train=30, n_test=10)
    dataset = load_dataset({"name": name, "data_dir": str(tmp_path)})
    assert dataset.train_x.shape == (30, 1, 28, 28) and dataset.train_x.dtype == torch.float32
    np.testing.assert_array_equal(dataset.train_y.numpy(), train_labels)
    np.testing.assert_array_equal(dataset.val_y.numpy(), test_labels)


def test_paper_config_accepts_the_published_forget_set_files(tmp_path):
    """data-unlearning-bench's forget_set_{k}.npy: int arrays of CIFAR-10 training indices."""
    config = yaml.safe_load((REPOSITORY / "config/paper_cifar10.yaml").read_text())
    published = np.random.default_rng(1).choice(50000, size=100, replace=False)
    folder = tmp_path / "forget_set_indices" / "CIFAR10"
    folder.mkdir(parents=True)
    np.save(folder / "forget_set_1.npy", published.astype(np.int64))
    np.save(folder / "forget_set_2.npy", published.astype(np.int32))  # either integer width
    for k in (1, 2):
        config["forget_sets"][f"published_{k}"] = {
            "kind": "indices", "path": f"forget_set_indices/CIFAR10/forget_set_{k}.npy"}
    # The dataset is not downloaded: checked against CIFAR-10's nominal 50,000 points.
    resolved = validate(config, base_dir=tmp_path)
    labels = np.arange(50000) % 10
    for k in (1, 2):
        indices = make_forget_set(f"published_{k}", resolved["forget_sets"][f"published_{k}"],
                                  labels, base_dir=tmp_path)
        np.testing.assert_array_equal(indices, np.sort(published))
    np.save(folder / "forget_set_1.npy", np.array([3, 50000]))
    with pytest.raises(ConfigError, match="published_1.path: index 50000 is outside"):
        validate(config, base_dir=tmp_path)


def test_training_labels_are_read_without_torch_as_the_loaders_read_them(tmp_path):
    from klomflow.data.datasets import training_labels

    write_cifar10(tmp_path / "cifar", per_batch=6, n_test=10)
    write_mnist(tmp_path / "mnist", n_train=30, n_test=10)
    for config in ({"name": "digits", "val_fraction": 0.3, "split_seed": 4},
                   {"name": "cifar10", "data_dir": str(tmp_path / "cifar")},
                   {"name": "mnist", "data_dir": str(tmp_path / "mnist")}):
        loaded = load_dataset(config | {"verify_checksums": False})
        np.testing.assert_array_equal(training_labels(config), loaded.train_y.numpy())
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        training_labels({"name": "cifar10", "data_dir": str(tmp_path / "absent")})


def test_digits_read_without_scikit_learn_equal_its_loader(monkeypatch):
    """The file read by hand gives scikit-learn's own arrays, and the fallback is its loader."""
    from sklearn.datasets import load_digits as sklearn_digits

    from klomflow.data import datasets

    bunch = sklearn_digits()
    pixels, labels = datasets.digits_arrays()
    assert pixels.dtype == bunch.data.dtype and labels.dtype == bunch.target.dtype
    np.testing.assert_array_equal(pixels, bunch.data)
    np.testing.assert_array_equal(labels, bunch.target)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    fallback_pixels, fallback_labels = datasets.digits_arrays()
    np.testing.assert_array_equal(fallback_pixels, bunch.data)
    np.testing.assert_array_equal(fallback_labels, bunch.target)


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_download_without_network_says_what_failed_and_where_to_put_the_files(
        tmp_path, monkeypatch, name):
    """No network: not a raw URLError, but the failure, the addresses and the folder to fill,
    and that folder is the one the loaders read."""
    import urllib.error
    import urllib.request

    from klomflow.data.datasets import DownloadError, download

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    data_dir = tmp_path / "data"
    with pytest.raises(DownloadError) as raised:
        download(name, str(data_dir))
    message = str(raised.value)
    assert "Temporary failure in name resolution" in message  # what failed
    assert "snakemake --cores 1 download_data" in message
    if name == "cifar10":  # one archive, unpacked into cifar-10-batches-py/
        assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
        assert f"cifar-10-python.tar.gz in {data_dir}/" in message
        folder = data_dir / "cifar-10-batches-py"
        write_cifar10(data_dir, per_batch=2, n_test=2)
    else:  # four files from any mirror, into MNIST/raw/
        for file_name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            assert file_name in message
        assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in message
        folder = data_dir / "MNIST" / "raw"
        write_mnist(data_dir, n_train=4, n_test=2)
    assert f"{folder}/" in message
    # Files put where the message says are the files the workflow reads.
    assert folder.is_dir()
    load_dataset({"name": name, "data_dir": str(data_dir), "verify_checksums": False})
