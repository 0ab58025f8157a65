"""Importing the published KLOM benchmark: file layouts, key mapping, and every import check."""

import hashlib
import io
import shutil

import numpy as np
import pytest
import torch
from published_files import (
    Fixture,
    authors_resnet9,
    published_state_dict,
    trained_like_authors_resnet9,
    write_easydub,
    write_klom_models,
)

from klomflow.config import ConfigError, validate
from klomflow.data.datasets import load_dataset
from klomflow.data.published import layout as published_layout
from klomflow.data.published import reading
from klomflow.data.published.layout import PublishedError
from klomflow.jobs import published as published_jobs
from klomflow.metrics.margins import margins_from_logits
from klomflow.training import published_models
from klomflow.training.loop import predict_logits
from klomflow.training.models import build_model


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return Fixture(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="module")
def folders(fixture, tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {"klom_models": write_klom_models(fixture, root / "klom_models"),
            "easydub": write_easydub(fixture, root / "easydub")}


def config_for(layout, path, fixture, **models):
    return {
        "dataset": {"name": "cifar10", "data_dir": str(fixture.data_dir),
                    "verify_checksums": False},
        "model": {"name": "resnet9"},
        "train": {},
        "models": {"n_originals": 4, "n_oracles": 2, "n_holdout_oracles": 2,
                   "source": {"layout": layout, "path": str(path)}} | models,
        "forget_sets": {"set_2": {"kind": "published", "id": 2},
                        "set_10": {"kind": "published", "id": 10}},
        "methods": {"do_nothing": None},
        "klom": {},
    }


def copy_folder(folders, layout, tmp_path):
    return shutil.copytree(folders[layout], tmp_path / layout)


# --- checkpoints: the key mapping and the normalisation ---


def test_published_resnet9_has_the_published_keys_and_parameter_count(fixture):
    state = published_state_dict(fixture.models[0])
    assert len(state) == 49
    assert state["model.2.module.0.0.weight"].shape == (128, 128, 3, 3)
    assert state["model.9.weight"].shape == (10, 128)
    assert state["model.0.0.weight"].stride() == (27, 1, 9, 3)  # channels_last, as published
    parameters = sum(p.numel() for p in fixture.models[0].parameters())
    assert parameters == 2_274_880
    assert state["model.0.1.num_batches_tracked"].dtype == torch.int64
    assert "model.9.bias" not in state


@pytest.mark.parametrize("wrapped", [True, False])
def test_a_checkpoint_of_the_authors_resnet9_loads_through_the_importer(wrapped, tmp_path):
    # The network is the authors' class (re-stated in published_files.py), not klomflow's:
    # a padding, a scale or a layer order of klomflow's ResNet-9 other than the published
    # one gives other logits here. `wrapped=False`: a checkpoint without the `model.` prefix.
    authors = trained_like_authors_resnet9(seed=7)
    if not wrapped:
        authors = authors.model
    path = tmp_path / "sd_0____epoch_23.pt"
    torch.save(authors.state_dict(), path)
    imported = published_models.load_published_model(path).eval()
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, logits = authors(x), imported(x)
    # Outputs vary between inputs by 1000 times the tolerance: not two near-constant maps.
    assert expected.std(dim=0).mean() > 1000 * 1e-5
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    # Every published tensor is used once: the imported state holds the same values.
    imported_values = sorted(float(v.double().sum()) for v in imported.state_dict().values())
    published_values = sorted(float(v.double().sum()) for v in authors.state_dict().values())
    assert imported_values == published_values


@pytest.mark.parametrize("layout", ["klom_models", "easydub"])
def test_imported_checkpoint_reproduces_the_logits_and_margins_written_beside_it(
        layout, folders, fixture):
    source = published_layout.Source(layout, folders[layout])
    dataset = load_dataset({"name": "cifar10", "data_dir": str(fixture.data_dir),
                            "verify_checksums": False})
    for model_id in (0, 3):
        model = published_models.load_published_model(source.original_checkpoint(model_id))
        logits = predict_logits(model, dataset.eval_x, torch.device("cpu"))
        if layout == "klom_models":
            stored = np.concatenate([
                reading.load_tensor_file(source.root / f"full_models/CIFAR10/{split}_logits_"
                                           f"{model_id}.pt") for split in ("train", "val")])
        else:
            files = source.original_files(4, "logits")
            stored = np.concatenate([np.load(files[split][model_id]) for split in files])
        # Stored logits are the authors' network's (channels_last); klomflow's may sum in
        # another order.
        np.testing.assert_allclose(logits, stored, rtol=1e-5, atol=1e-4)
        margins = reading.original_margins(source, fixture.labels, fixture.n_train, 4)
        np.testing.assert_allclose(margins_from_logits(logits, fixture.labels),
                                   margins[model_id], rtol=1e-5, atol=1e-4)


def test_checkpoint_keys_are_stripped_by_prefix_not_replaced(fixture):
    state = published_state_dict(fixture.models[0])
    renamed = published_models.published_to_klomflow_keys(state)
    assert "2.block.0.0.weight" in renamed and "5.block.1.1.running_var" in renamed
    assert not any(key.startswith(("model.", "module.")) for key in renamed)
    # A DataParallel prefix on top is stripped too; a global replace would break `2.module.`.
    doubled = {"module." + key.removeprefix("model."): value for key, value in state.items()}
    assert published_models.published_to_klomflow_keys(doubled).keys() == renamed.keys()


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, fixture):
    state = published_state_dict(fixture.models[0])
    state["model.9.bias"] = torch.zeros(10)  # the published head has no bias
    torch.save(state, tmp_path / "sd_0____epoch_23.pt")
    with pytest.raises(PublishedError, match="not a ResNet-9 state dict"):
        published_models.load_published_model(tmp_path / "sd_0____epoch_23.pt")


def test_wrong_normalisation_fails_the_margin_check(folders, fixture):
    source = published_layout.Source("klom_models", folders["klom_models"])
    model = published_models.load_published_model(source.original_checkpoint(0))
    dataset = load_dataset({"name": "cifar10", "data_dir": str(fixture.data_dir),
                            "verify_checksums": False})
    # Inputs normalised with the pixel std (0.247, ...) instead of the published 0.2023, ...
    std_published = torch.tensor(published_layout.CIFAR10_STD).view(1, 3, 1, 1)
    std_pixels = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)
    wrong_x = dataset.eval_x * std_published / std_pixels
    published_jobs.check_checkpoint_margins(model, dataset.eval_x, fixture.original_margins[0],
                                       fixture.labels, torch.device("cpu"), "model 0")
    with pytest.raises(PublishedError, match="normalisation"):
        published_jobs.check_checkpoint_margins(model, wrong_x, fixture.original_margins[0],
                                           fixture.labels, torch.device("cpu"), "model 0")


def test_cifar10_uses_the_published_normalisation(fixture):
    dataset = load_dataset({"name": "cifar10", "data_dir": str(fixture.data_dir),
                            "verify_checksums": False})
    with open(fixture.data_dir / "cifar-10-batches-py/data_batch_1", "rb") as handle:
        import pickle

        raw = pickle.load(handle, encoding="latin1")["data"][0].reshape(3, 32, 32) / 255.0
    expected = (raw - np.array(published_layout.CIFAR10_MEAN)[:, None, None]) / np.array(
        published_layout.CIFAR10_STD)[:, None, None]
    np.testing.assert_allclose(dataset.train_x[0].numpy(), expected, atol=1e-5)


# --- margins: point order, both layouts agree ---


@pytest.mark.parametrize("layout", ["klom_models", "easydub"])
def test_oracle_margins_come_back_in_training_index_order(layout, folders, fixture):
    source = published_layout.Source(layout, folders[layout])
    for forget_id, forget in fixture.forget_sets.items():
        margins = reading.oracle_margins(source, forget_id, forget, fixture.labels,
                                           fixture.n_train, 5)
        np.testing.assert_array_equal(margins, fixture.oracle_margins[forget_id])


@pytest.mark.parametrize("forget_order", ["file", "sorted"])
def test_held_out_oracle_logits_and_oracle_margins_take_the_same_forget_order(
        forget_order, fixture, tmp_path):
    # Set 10's forget file is unsorted; a snapshot may hold its `forget` files in sorted order.
    root = write_easydub(fixture, tmp_path / "easydub", forget_order=forget_order)
    config = config_for("easydub", root, fixture)
    n_val = len(fixture.labels) - fixture.n_train
    for name, forget_id in (("set_10", 10), ("set_2", 2)):
        holdout = published_jobs.import_holdout_oracle_logits(config, name, fixture.n_train, n_val,
                                                         log=lambda message: None)
        np.testing.assert_array_equal(holdout, fixture.oracle_logits[forget_id][2:4])
        scored, held_out = published_jobs.import_oracle_margins(
            config, name, fixture.labels, fixture.n_train, fixture.original_margins,
            log=lambda message: None)
        np.testing.assert_array_equal(scored, fixture.oracle_margins[forget_id][:2])
        np.testing.assert_array_equal(held_out, fixture.oracle_margins[forget_id][2:4])


def test_easydub_forget_order_follows_the_forget_file_for_an_unsorted_set(folders, fixture,
                                                                         tmp_path):
    forget = fixture.forget_sets[10]
    assert not np.all(np.diff(forget) > 0)
    source = published_layout.Source("easydub", folders["easydub"])
    train_margins = fixture.original_margins[:, :fixture.n_train]
    np.testing.assert_array_equal(reading.forget_order(source, 10, forget), forget)
    # Forget files written in sorted order are recognised from the originals' forget file.
    root = copy_folder(folders, "easydub", tmp_path)
    np.save(root / "margins/cifar10/pretrain/forget_10/resnet9/id_0_epoch_23.npy",
            train_margins[0, np.sort(forget)])
    sorted_source = published_layout.Source("easydub", root)
    np.testing.assert_array_equal(
        reading.forget_order(sorted_source, 10, forget), np.sort(forget))
    np.save(root / "margins/cifar10/pretrain/forget_10/resnet9/id_0_epoch_23.npy",
            train_margins[1, forget])
    with pytest.raises(PublishedError, match="do not tell the order of forget set 10"):
        reading.forget_order(sorted_source, 10, forget)


def test_oracle_root_may_be_named_oracle_models(folders, fixture, tmp_path):
    root = copy_folder(folders, "klom_models", tmp_path)
    (root / "oracles").rename(root / "oracle_models")
    source = published_layout.Source("klom_models", root)
    margins = reading.oracle_margins(source, 2, fixture.forget_sets[2], fixture.labels,
                                       fixture.n_train, 5)
    np.testing.assert_array_equal(margins, fixture.oracle_margins[2])


def test_oracle_models_is_preferred_per_forget_set_and_both_folders_are_named(
        folders, fixture, tmp_path):
    root = copy_folder(folders, "klom_models", tmp_path)
    shutil.copytree(root / "oracles", root / "oracle_models")
    # oracles/ holds, for set 2, oracles that saw the forget set (as before the fix that
    # moved them to oracle_models/): margins as high as the originals'.
    old_margins = root / "oracles/CIFAR10/only_margins/forget_set_2"
    for split, part in (("train", fixture.split), ("val", fixture.val)):
        torch.save(torch.tensor(part(fixture.original_margins + 1.0)),
                   old_margins / f"{split}_margins_all.pt")
    # Set 10 is held by oracles/ only.
    shutil.rmtree(root / "oracle_models/CIFAR10/only_margins/forget_set_10")
    shutil.rmtree(root / "oracle_models/CIFAR10/forget_set_10")
    config = config_for("klom_models", root, fixture)
    messages = []
    for name, forget_id in (("set_2", 2), ("set_10", 10)):
        scored, held_out = published_jobs.import_oracle_margins(
            config, name, fixture.labels, fixture.n_train, fixture.original_margins,
            log=messages.append)
        np.testing.assert_array_equal(np.concatenate([scored, held_out]),
                                      fixture.oracle_margins[forget_id][:4])
    warnings = [m for m in messages if m.startswith("WARNING: both")]
    assert len(warnings) == 1 and "forget_set_2" in warnings[0]
    assert "reading oracle_models/" in warnings[0]
    for folder in ("oracle_models", "oracles"):
        path = root / folder / "CIFAR10/only_margins/forget_set_2/train_margins_all.pt"
        assert f"({path}, SHA-256 {published_layout.file_sha256(path)})" in warnings[0]
    assert "different files" in warnings[0]
    source = published_layout.Source("klom_models", root)
    assert source.oracle_root(2) == root / "oracle_models"
    assert source.oracle_root(10) == root / "oracles"
    # The held-out logits come from the same folder as the margins.
    n_val = len(fixture.labels) - fixture.n_train
    np.testing.assert_array_equal(
        published_jobs.import_holdout_oracle_logits(config, "set_10", fixture.n_train, n_val,
                                               log=messages.append),
        fixture.oracle_logits[10][2:4])


def test_klom_models_margins_fall_back_to_per_model_logits(folders, fixture, tmp_path):
    root = copy_folder(folders, "klom_models", tmp_path)
    shutil.rmtree(root / "oracles/CIFAR10/only_margins")
    source = published_layout.Source("klom_models", root)
    margins = reading.oracle_margins(source, 2, fixture.forget_sets[2], fixture.labels,
                                       fixture.n_train, 5)
    np.testing.assert_allclose(margins, fixture.oracle_margins[2], atol=1e-6)


# --- the checks: each on a broken fixture ---


def test_too_few_oracles_names_the_count_and_the_forget_set(folders, fixture):
    config = config_for("easydub", folders["easydub"], fixture, n_oracles=3, n_holdout_oracles=3)
    with pytest.raises(ConfigError, match="holds 5 oracles for forget_set_2, the config asks "
                                          "for 6"):
        validate(config)
    config = config_for("klom_models", folders["klom_models"], fixture, n_oracles=3,
                        n_holdout_oracles=3)
    validate(config)  # `*_all.pt` files are counted when read:
    source = published_layout.Source("klom_models", folders["klom_models"])
    with pytest.raises(PublishedError, match="holds 5 oracles for forget_set_2"):
        reading.oracle_margins(source, 2, fixture.forget_sets[2], fixture.labels,
                                 fixture.n_train, 6)


def test_a_missing_file_is_named(folders, fixture, tmp_path):
    root = copy_folder(folders, "easydub", tmp_path)
    missing = root / "margins/cifar10/pretrain/val/resnet9/id_0_epoch_23.npy"
    missing.unlink()
    with pytest.raises(ConfigError, match="id_0_epoch_23.npy"):
        validate(config_for("easydub", root, fixture))


def test_wrong_point_count_is_an_error(folders, fixture, tmp_path):
    root = copy_folder(folders, "klom_models", tmp_path)
    train = torch.load(root / "full_models/CIFAR10/train_margins_all.pt")
    torch.save(train[:, :-1].clone(), root / "full_models/CIFAR10/train_margins_all.pt")
    source = published_layout.Source("klom_models", root)
    with pytest.raises(PublishedError, match=r"expected shape \[n_models, 40\]"):
        reading.original_margins(source, fixture.labels, fixture.n_train, 4)


def test_nan_is_an_error_and_float16_is_upcast_with_a_warning(folders, fixture, tmp_path):
    root = copy_folder(folders, "easydub", tmp_path)
    path = root / "margins/cifar10/pretrain/retain/resnet9/id_1_epoch_23.npy"
    values = np.load(path)
    np.save(path, values.astype(np.float16))
    source = published_layout.Source("easydub", root)
    messages = []
    margins = reading.original_margins(source, fixture.labels, fixture.n_train, 4,
                                         log=messages.append)
    assert margins.dtype == np.float32
    assert any("float16" in m and "id_1_epoch_23.npy" in m for m in messages)
    values[3] = np.nan
    np.save(path, values)
    with pytest.raises(PublishedError, match="1 NaN or infinite"):
        reading.original_margins(source, fixture.labels, fixture.n_train, 4)


def test_labels_are_recovered_from_logits_and_margins(fixture):
    labels = reading.recover_labels(fixture.original_logits[1], fixture.original_margins[1])
    np.testing.assert_array_equal(labels, fixture.labels)


def test_margins_of_other_points_than_the_logits_fail_label_recovery(fixture):
    shuffled = fixture.original_margins[1][::-1].copy()
    with pytest.raises(PublishedError, match="do not follow from the logits"):
        reading.recover_labels(fixture.original_logits[1], shuffled, "model 1")


def test_labels_that_disagree_with_the_dataset_are_an_error(folders, fixture):
    source = published_layout.Source("easydub", folders["easydub"])
    margins = reading.original_margins(source, fixture.labels, fixture.n_train, 4)
    assert published_jobs.check_original_labels(source, margins, fixture.labels, fixture.n_train,
                                           4) == 4
    other = fixture.labels.copy()
    other[5] = (other[5] + 1) % 10
    with pytest.raises(PublishedError,
                       match="original model 0 .* at the dataset's labels at 1 of 50 points "
                             r"\(first: point 5,"):
        published_jobs.check_original_labels(source, margins, other, fixture.n_train, 4)


def test_a_model_whose_margins_are_of_another_point_order_is_an_error(folders, fixture,
                                                                      tmp_path):
    root = copy_folder(folders, "easydub", tmp_path)
    path = root / "margins/cifar10/pretrain/retain/resnet9/id_2_epoch_23.npy"
    np.save(path, np.load(path)[::-1].copy())
    source = published_layout.Source("easydub", root)
    margins = reading.original_margins(source, fixture.labels, fixture.n_train, 4)
    with pytest.raises(PublishedError, match="original model 2 "):
        published_jobs.check_original_labels(source, margins, fixture.labels, fixture.n_train, 4)


@pytest.mark.parametrize("forget_order", ["file", "sorted"])
def test_margins_computed_in_bfloat16_beside_float32_logits_import(forget_order, fixture,
                                                                  tmp_path):
    # EasyDUB computed each split in its own bfloat16 pass: stored margins differ from the
    # stored logits' by about 1e-2 on correct files, and every check must accept them.
    root = write_easydub(fixture, tmp_path / "easydub", forget_order, margins="bfloat16")
    source = published_layout.Source("easydub", root)
    margins = reading.original_margins(source, fixture.labels, fixture.n_train, 4)
    assert np.abs(margins - fixture.original_margins).max() > 5e-3
    assert published_jobs.check_original_labels(source, margins, fixture.labels, fixture.n_train,
                                           4) == 4
    labels, n_train = published_jobs.labels_from_model_zero(source)
    np.testing.assert_array_equal(labels, fixture.labels)
    forget = fixture.forget_sets[10]
    expected = forget if forget_order == "file" else np.sort(forget)
    np.testing.assert_array_equal(reading.forget_order(source, 10, forget), expected)
    config = config_for("easydub", root, fixture)
    scored, _ = published_jobs.import_oracle_margins(config, "set_10", fixture.labels,
                                                fixture.n_train, margins)
    np.testing.assert_allclose(scored, fixture.oracle_margins[10][:2], atol=0.1)


def test_easydub_oracle_retain_files_out_of_index_order_are_an_error(folders, fixture,
                                                                     tmp_path):
    root = copy_folder(folders, "easydub", tmp_path)
    source = published_layout.Source("easydub", root)
    forget = fixture.forget_sets[2]
    messages = []
    reading.oracle_margins(source, 2, forget, fixture.labels, fixture.n_train, 5,
                             log=messages.append)
    assert any("give the dataset's labels on its retain" in m for m in messages)
    # Retain files in descending index order, logits and margins alike (consistent with
    # each other, so only the labels show it).
    for kind in ("margins", "logits"):
        for path in (root / kind / "cifar10/oracle/forget_2/retain/resnet9").glob("*.npy"):
            np.save(path, np.load(path)[::-1].copy())
    with pytest.raises(PublishedError,
                       match="oracle 0 of forget_set_2 .*ascending training index order"):
        reading.oracle_margins(source, 2, forget, fixture.labels, fixture.n_train, 5)
    # Without oracle logits the order cannot be checked: a warning says so.
    shutil.rmtree(root / "logits/cifar10/oracle/forget_2")
    messages = []
    reading.oracle_margins(source, 2, forget, fixture.labels, fixture.n_train, 5,
                             log=messages.append)
    assert any("is not checked" in m for m in messages)


def test_forget_order_needs_a_clear_gap_between_the_two_orders(folders, fixture, tmp_path):
    root = copy_folder(folders, "easydub", tmp_path)
    forget = fixture.forget_sets[10]
    retain_file = root / "margins/cifar10/pretrain/retain/resnet9/id_0_epoch_23.npy"
    forget_file = root / "margins/cifar10/pretrain/forget_10/resnet9/id_0_epoch_23.npy"
    retain = np.load(retain_file)
    retain[forget] = 1.0 + 0.01 * np.arange(len(forget))  # both orders fit within 0.05
    np.save(retain_file, retain)
    np.save(forget_file, retain[forget])
    source = published_layout.Source("easydub", root)
    with pytest.raises(PublishedError, match="do not tell the order of forget set 10"):
        reading.forget_order(source, 10, forget)
    # A sorted forget file leaves nothing to decide: its forget files are not compared.
    np.save(forget_file.parent.parent.parent / "forget_2/resnet9/id_0_epoch_23.npy",
            np.zeros(len(fixture.forget_sets[2]), dtype=np.float32))
    np.testing.assert_array_equal(reading.forget_order(source, 2, fixture.forget_sets[2]),
                                  fixture.forget_sets[2])


def test_labels_without_the_images_need_model_zeros_logits(folders, fixture, tmp_path):
    root = copy_folder(folders, "easydub", tmp_path)
    source = published_layout.Source("easydub", root)
    labels, n_train = published_jobs.labels_from_model_zero(source)
    np.testing.assert_array_equal(labels, fixture.labels)
    assert n_train == fixture.n_train
    path = root / "logits/cifar10/pretrain/retain/resnet9/id_0_epoch_23.npy"
    logits = np.load(path)
    np.save(path, logits[:, :1])  # one column: not logits of 10 classes
    with pytest.raises(PublishedError,
                       match=r"id_0_epoch_23.npy: found float32 of shape \[40, 1\], expected "
                             r"\[40, n_classes\].*CIFAR-10 images"):
        published_jobs.labels_from_model_zero(source)
    np.save(path, logits[:-1])  # a point fewer than the margins
    with pytest.raises(PublishedError, match=r"shape \[39, 10\], expected \[40, "):
        published_jobs.labels_from_model_zero(source)
    path.unlink()
    with pytest.raises(PublishedError,
                       match=r"id_0_epoch_23.npy is missing; without the CIFAR-10 images"):
        published_jobs.labels_from_model_zero(source)


def test_oracles_that_saw_the_forget_set_are_an_error(fixture):
    forget = fixture.forget_sets[2]
    reading.check_oracles_forgot(fixture.oracle_margins[2], fixture.original_margins, forget, 2)
    saw_it = fixture.original_margins + 1.0  # margins as high as the originals' on F
    with pytest.raises(PublishedError, match="not below the originals'"):
        reading.check_oracles_forgot(saw_it, fixture.original_margins, forget, 2)


def test_forget_set_checksums_match_the_published_files(tmp_path):
    np.random.seed(0)
    set_1 = np.sort(np.random.choice(50_000, 10, replace=False)).astype("<i8")
    folder = tmp_path / "forget_set_indices/CIFAR10"
    folder.mkdir(parents=True)
    np.save(folder / "forget_set_1.npy", set_1)
    source = published_layout.Source("klom_models", tmp_path)
    messages = []
    indices = reading.read_forget_set(source, 1, 50_000, log=messages.append)
    np.testing.assert_array_equal(indices, set_1)
    assert messages == []
    np.save(folder / "forget_set_1.npy", set_1.astype(np.int32))  # same values, other bytes
    reading.read_forget_set(source, 1, 50_000, log=messages.append)
    assert len(messages) == 1 and "differs from the published forget set 1" in messages[0]


def test_forget_set_checks(tmp_path):
    folder = tmp_path / "forget_sets/cifar10"
    folder.mkdir(parents=True)
    source = published_layout.Source("easydub", tmp_path)
    with pytest.raises(PublishedError, match="missing file"):
        reading.read_forget_set(source, 3, 100)
    np.save(folder / "forget_set_3.npy", np.array([4, 9, 4]))
    with pytest.raises(PublishedError, match="1 duplicate"):
        reading.read_forget_set(source, 3, 100)
    np.save(folder / "forget_set_3.npy", np.array([4, 9, 140]))
    with pytest.raises(PublishedError, match="index 140 is outside"):
        reading.read_forget_set(source, 3, 100)


def test_forget_set_of_whole_numbers_stored_as_floats_is_cast_with_a_warning(tmp_path):
    folder = tmp_path / "forget_sets/cifar10"
    folder.mkdir(parents=True)
    source = published_layout.Source("easydub", tmp_path)
    # 2**53 + 1 is not a float64: stay far below it, where the cast is exact.
    np.save(folder / "forget_set_3.npy", np.array([40.0, 9.0, 17.0, 3.0]))
    messages = []
    indices = reading.read_forget_set(source, 3, 100, log=messages.append)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, [40, 9, 17, 3])  # the file's order is kept
    assert any("as float64; cast to int64" in m for m in messages)
    np.save(folder / "forget_set_3.npy", np.array([40.0, 9.5], dtype=np.float32))
    with pytest.raises(PublishedError, match=r"1 of 2 values are not whole numbers "
                                                       r"\(first: .*9\.5.* at position 1\)"):
        reading.read_forget_set(source, 3, 100)
    np.save(folder / "forget_set_3.npy", np.array([40.0, np.nan]))
    with pytest.raises(PublishedError, match="not whole numbers"):
        reading.read_forget_set(source, 3, 100)


def test_forget_set_file_digest_is_of_the_file_bytes():
    np.random.seed(1)
    set_2 = np.sort(np.random.choice(50_000, 100, replace=False)).astype("<i8")
    buffer = io.BytesIO()
    np.save(buffer, set_2)
    assert hashlib.sha256(buffer.getvalue()).hexdigest()[:16] == \
        published_layout.PUBLISHED_FORGET_SETS[2][2]


# --- EasyDUB's check: the result beside both published triples ---


def check_table(p95_by_split, n_models=100, floor=(0.6, 0.62, 0.64), **options):
    import pandas as pd

    rows = []
    for method, values in (("do_nothing", p95_by_split), ("oracle_holdout", floor)):
        for split, value in zip(("retain", "forget", "val"), values):
            rows.append({"forget_set": "set_2", "method": method, "config_id": "x",
                         "split": split, "n_unlearned": n_models, "n_oracle": n_models,
                         "klom_p95": value, "klom_bins": 20, "klom_eps": 1e-5,
                         "klom_clip": 100.0, "klom_binning": "reference",
                         "klom_direction": "unlearned_to_oracle"} | options)
    return pd.DataFrame(rows)


def test_easydub_check_prints_both_references_and_which_it_reproduces(folders, fixture):
    config = config_for("easydub", folders["easydub"], fixture)
    readme = published_jobs.easydub_check_report(check_table((0.3191, 9.2647, 0.2639)), config)
    lines = readme.splitlines()
    assert lines[0].startswith("EasyDUB check: p95 KLOM of do_nothing on forget set 2 (set_2)")
    # split, this run, README, figure, noise floor
    assert lines[2].split() == ["retain", "0.3191", "0.3191", "0.6300", "0.6000"]
    assert lines[3].split() == ["forget", "9.2647", "9.2647", "9.2600", "0.6200"]
    assert lines[4].split() == ["val", "0.2639", "0.2639", "0.6600", "0.6400"]
    assert lines[5:] == ["  Reproduces the EasyDUB README (eval_pretrain.py output): every "
                         "split within 0.001."]
    figure = published_jobs.easydub_check_report(check_table((0.65, 9.24, 0.64)), config)
    assert figure.splitlines()[5:] == [
        "  Reproduces the EasyDUB figure assets/compute_vs_klom.png (read off the plot): "
        "every split within 0.03."]
    neither = published_jobs.easydub_check_report(check_table((0.3191, 9.2647, 0.2659)), config)
    assert "Reproduces neither: largest difference from the EasyDUB README (eval_pretrain.py " \
           "output) 0.0020 (tolerance 0.001)" in neither
    other_counts = published_jobs.easydub_check_report(
        check_table((0.3191, 9.2647, 0.2639), n_models=4, klom_bins=10), config)
    assert other_counts.splitlines()[-1] == (
        "  Not comparable with either: 4 originals (the reference: 100); 4 oracles (the "
        "reference: 100); klom.bins 10 (the reference: 20).")
    klom_models = config_for("klom_models", folders["klom_models"], fixture)
    assert published_jobs.easydub_check_report(check_table((0.3, 9.2, 0.2)), klom_models) is None


# --- config ---


def test_config_checks_of_the_source(folders, fixture, tmp_path):
    config = config_for("easydub", folders["easydub"], fixture)
    validate(config)
    config["dataset"]["name"] = "cifar100"
    with pytest.raises(ConfigError, match="dataset.name: the published easydub models"):
        validate(config)
    config = config_for("easydub", tmp_path / "absent", fixture)
    with pytest.raises(ConfigError, match="models.source.path: folder"):
        validate(config)
    config = config_for("easydub", folders["easydub"], fixture)
    config["forget_sets"]["mine"] = {"kind": "random", "size": 3}
    with pytest.raises(ConfigError, match="forget_sets.mine: the easydub folder has oracles for "
                                          "published forget sets only"):
        validate(config)
    config["models"]["source"]["train_missing_oracles"] = True
    validate(config)
    config = config_for("easydub", folders["easydub"], fixture)
    config["models"]["source"] = {"layout": "train"}
    with pytest.raises(ConfigError, match="forget_sets.set_2.kind: a published forget set needs"):
        validate(config)
    config["models"]["source"] = {"layout": "easydub"}
    with pytest.raises(ConfigError, match="path"):
        validate(config)


def test_build_model_has_the_published_keys_once_renamed():
    model = build_model({"name": "resnet9"}, (3, 32, 32), 10, init_seed=0)
    keys = published_models.published_to_klomflow_keys(authors_resnet9().state_dict())
    assert keys.keys() == model.state_dict().keys()


@pytest.mark.parametrize("name", ["klom_models_cifar10", "easydub_cifar10", "easydub_check"])
def test_published_configs_are_valid(name, folders, fixture):
    import yaml
    from workflow import REPOSITORY

    config = yaml.safe_load((REPOSITORY / "config" / f"{name}.yaml").read_text())
    layout = config["models"]["source"]["layout"]
    assert config["forget_sets"]["published_2"] == {"kind": "published", "id": 2}
    # Shrunk to the fixture folder (which holds sets 2 and 10 and 4 originals, 5 oracles).
    config["models"]["source"]["path"] = str(folders[layout])
    config["models"] |= {"n_originals": 4, "n_oracles": 2, "n_holdout_oracles": 2}
    config["forget_sets"] = {k: v for k, v in config["forget_sets"].items()
                             if v["id"] in (2, 10)}
    config["dataset"] |= {"data_dir": str(fixture.data_dir), "verify_checksums": False}
    resolved = validate(config)
    assert not any(spec["kind"] != "published" for spec in resolved["forget_sets"].values())
