"""The forget-set kinds of FORGET-SETS.md as a config sees them: keys, defaults, errors,
and the static `subpopulation` kind on CIFAR-100 files with coarse labels."""

import copy

import numpy as np
import pytest
from dataset_files import write_cifar100
from workflow import tiny_config

from klomflow.config import ConfigError, validate
from klomflow.forget_sets.kinds import inputs_needed

PC = {"kind": "datamodel_pc", "component": 1, "size": 20}
NN_FILE = {"kind": "nearest_neighbors", "anchor": 6, "size": 20, "embedding": "file",
           "path": "embedding.npy"}


def with_sets(forget_sets, **datamodels):
    config = tiny_config()
    config["forget_sets"] = forget_sets
    config["methods"] = {"do_nothing": None}
    config["datamodels"] = {"n_subset_models": 100} | datamodels
    return config


def test_derived_kinds_get_their_defaults_and_name_their_inputs(tmp_path):
    np.save(tmp_path / "embedding.npy", np.zeros((1500, 4)))
    resolved = validate(with_sets({"pc": PC, "nn": NN_FILE,
                                   "wc": {"kind": "worst_case", "size": 20},
                                   "bl": {"kind": "worst_case", "size": 20,
                                          "proxy": "bilevel"}}), tmp_path)
    sets = resolved["forget_sets"]
    assert sets["pc"] == PC | {"side": "top", "rows": "target", "center": True,
                               "normalize": "none", "zero_diagonal": False, "solver": "auto",
                               "seed": 0}
    assert sets["nn"]["metric"] == "cosine" and sets["nn"]["include_anchor"] is True
    assert sets["wc"]["proxy"] == "inout_klom" and "outer_steps" not in sets["wc"]
    assert sets["bl"]["outer_steps"] == 10 and sets["bl"]["inner_epochs"] == 2
    assert sets["bl"]["lower_level"] == "fine_tune"
    assert inputs_needed(sets["pc"]) == {"margin_datamodel"}
    assert inputs_needed(sets["nn"]) == {"embedding_file"}
    assert inputs_needed(sets["wc"]) == {"subset_models"}
    assert inputs_needed(sets["bl"]) == {"pilot"}
    assert inputs_needed(sets["wc"] | {"proxy": "datamodel_group"}) == {
        "margin_datamodel", "subset_models"}


@pytest.mark.parametrize("spec, datamodels, message", [
    (PC | {"side": "both", "size": 21}, {}, r"forget_sets\.s\.size=21: side: both"),
    (PC | {"component": 21}, {}, r"forget_sets\.s\.component"),
    (PC | {"size": 1438}, {}, r"forget_sets\.s\.size=1438"),
    (PC, {"n_subset_models": 50},
     r"forget_sets\.s: kind datamodel_pc .* datamodels\.n_subset_models=50"),
    (PC | {"solver": "svd"}, {}, r"forget_sets\.s"),
    (NN_FILE | {"anchor": 1438}, {}, r"forget_sets\.s\.anchor=1438"),
    (NN_FILE | {"path": "missing.npy"}, {}, r"forget_sets\.s\.path: .*missing\.npy"),
    (NN_FILE | {"path": "short.npy"}, {}, r"forget_sets\.s\.path: .* shape \(10, 4\)"),
    ({k: v for k, v in NN_FILE.items() if k != "path"}, {}, r"forget_sets\.s\.path"),
    (NN_FILE | {"models": 3}, {}, r"forget_sets\.s\.models"),
    ({"kind": "worst_case", "size": 20, "outer_steps": 3}, {}, r"forget_sets\.s\.outer_steps"),
    ({"kind": "worst_case", "size": 20, "proxy": "loss"}, {}, r"forget_sets\.s"),
    ({"kind": "worst_case", "size": 20, "lower_level": "retrain"}, {},
     r"forget_sets\.s\.lower_level: only proxy: bilevel"),
    ({"kind": "worst_case", "size": 20, "proxy": "bilevel", "lower_level": "w_FT"}, {},
     r"forget_sets\.s"),
    ({"kind": "subpopulation", "subclass": 3}, {}, r"forget_sets\.s\.kind: subpopulation needs"),
])
def test_bad_forget_set_keys_are_errors_naming_the_key(tmp_path, spec, datamodels, message):
    np.save(tmp_path / "embedding.npy", np.zeros((1500, 4)))
    np.save(tmp_path / "short.npy", np.zeros((10, 4)))
    with pytest.raises(ConfigError, match=message):
        validate(with_sets({"s": spec}, **datamodels), tmp_path)


def cifar100_config(tmp_path, forget_sets, labels="coarse"):
    config = with_sets(forget_sets)
    config["dataset"] = {"name": "cifar100", "data_dir": str(tmp_path),
                         "verify_checksums": False, "labels": labels}
    config["model"] = {"name": "resnet9"}
    return config


# Fine classes 10..14 make superclass 2 (fine // 5 in the test files); 12 has 6 points.
TRAIN_FINE = np.array([12, 3, 12, 10, 12, 14, 12, 12, 40, 12, 11, 13] * 1 + [3] * 8)


def test_subpopulation_is_one_fine_class_inside_its_superclass(tmp_path):
    from klomflow.forget_sets.kinds import is_whole_class, make_forget_set

    write_cifar100(tmp_path, train_fine=TRAIN_FINE)
    coarse = TRAIN_FINE // 5
    sets = {"first": {"kind": "subpopulation", "subclass": 12, "size": 4},
            "all": {"kind": "subpopulation", "subclass": 12},
            "drawn": {"kind": "subpopulation", "subclass": 12, "size": 4, "select": "random",
                      "seed": 1}}
    resolved = validate(cifar100_config(tmp_path, sets), tmp_path)
    made = {name: make_forget_set(name, spec, coarse, train_subclasses=TRAIN_FINE)
            for name, spec in resolved["forget_sets"].items()}
    members = np.flatnonzero(TRAIN_FINE == 12)
    np.testing.assert_array_equal(made["all"], members)
    np.testing.assert_array_equal(made["first"], members[:4])  # the smallest indices
    assert set(made["drawn"]) <= set(members) and len(made["drawn"]) == 4
    # It shares its label with retained points of the other subclasses: never a whole class.
    assert (coarse[made["all"]] == 2).all() and (coarse == 2).sum() > len(members)
    assert not is_whole_class(made["all"], coarse)


@pytest.mark.parametrize("change, message", [
    ({"labels": "fine"}, r"subpopulation needs dataset cifar100 with dataset\.labels: coarse"),
    ({"subclass": 50}, r"forget_sets\.s\.subclass: "),
    ({"size": 7}, r"forget_sets\.s\.size: "),
])
def test_subpopulation_errors(tmp_path, change, message):
    write_cifar100(tmp_path, train_fine=TRAIN_FINE)
    spec = {"kind": "subpopulation", "subclass": 12}
    labels = change.pop("labels", "coarse")
    with pytest.raises(ConfigError, match=message):
        validate(cifar100_config(tmp_path, {"s": spec | change}, labels=labels), tmp_path)


def test_class_only_methods_refuse_a_subpopulation(tmp_path):
    write_cifar100(tmp_path, train_fine=TRAIN_FINE)
    config = cifar100_config(tmp_path, {"s": {"kind": "subpopulation", "subclass": 12}})
    config["methods"] = {"unsir": None}
    with pytest.raises(ConfigError, match="unsir forgets whole classes only"):
        validate(config, tmp_path)


def test_coarse_labels_are_for_cifar100_only(tmp_path):
    config = copy.deepcopy(tiny_config())
    config["dataset"]["labels"] = "coarse"
    with pytest.raises(ConfigError, match="dataset.labels: coarse labels exist for cifar100"):
        validate(config, tmp_path)


def rule_edges(folder) -> set:
    """(upstream rule, downstream rule) pairs of Snakemake's rule graph."""
    import re

    from workflow import snakemake

    dot = snakemake(folder, "--rulegraph").stdout
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", dot, re.MULTILINE))
    return {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.MULTILINE)}


def test_a_pc_set_is_made_after_the_subset_models_and_before_its_oracles(tmp_path):
    from workflow import write_config

    write_config(tmp_path, with_sets({"pc": PC}))
    edges = rule_edges(tmp_path)
    assert ("train_subset_models", "fit_margin_datamodel") in edges
    assert ("fit_margin_datamodel", "derive_forget_set") in edges
    assert ("derive_forget_set", "train_oracles") in edges
    assert not any("make_forget_set" in edge for edge in edges)
    # Originals and subset models never wait for a forget set (no cycle).
    assert ("derive_forget_set", "train_subset_models") not in edges
    assert ("derive_forget_set", "train_originals") not in edges
