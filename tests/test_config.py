"""Bad configs fail before any job runs, with a message that names the key."""

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml
from workflow import reordered, reversed_keys

from klomflow.config import (
    SCHEMA_PATH,
    ConfigError,
    method_settings,
    model_seed,
    validate,
    with_defaults,
)
from klomflow.forget_sets.kinds import ForgetSetWarning, make_forget_set
from klomflow.options import SECTIONS, choices

DEFAULT = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())


def edited(**changes):
    config = copy.deepcopy(DEFAULT)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = config
        for key in parents:
            target = target[key]
        if value is KeyError:
            del target[last]
        else:
            target[last] = value
    return config


def test_default_config_is_valid():
    resolved = validate(copy.deepcopy(DEFAULT))
    assert resolved["klom"]["bins"] == 20


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"trian": {}}, "trian"),
        ({"train__epochs": "thirty"}, "train.epochs"),
        ({"train__learning_rate": 0.1}, "learning_rate"),
        ({"models__n_oracles": 1}, "models.n_oracles"),
        ({"models__n_originals": 1}, "models.n_originals"),
        ({"klom__binning": "histogram"}, "klom.binning"),
        ({"forget_sets__class_3__label": 12}, "forget_sets.class_3.label"),
        ({"forget_sets__random_60__size": 0}, "forget_sets.random_60"),
        ({"forget_sets__random_60__size": 100000}, "forget_sets.random_60.size"),
        ({"forget_sets__random_60__colour": "red"}, "forget_sets.random_60"),
        ({"methods__unheard_of": None}, "methods.unheard_of"),
        ({"methods__gradient_ascent__lr": "1e-3"}, "methods.gradient_ascent.lr"),
        ({"methods__gradient_ascent__epochs": 1.5}, "methods.gradient_ascent.epochs"),
        ({"methods__gradient_ascent__momentun": 0.9}, "methods.gradient_ascent.momentun"),
        ({"methods__gradient_ascent__lr": 0.0}, "methods.gradient_ascent.lr: a learning rate"),
        ({"methods__gradient_ascent__lr": [0.01, -0.01]}, "methods.gradient_ascent.lr: a learn"),
        ({"methods__unsir__impair_lr": -1.0e-3}, "methods.unsir.impair_lr: a learning rate"),
        ({"methods__gradient_descent__epochs": -1}, "methods.gradient_descent.epochs: an epoch"),
        ({"methods__unsir__repair_epochs": -2}, "methods.unsir.repair_epochs: an epoch"),
        ({"methods__scrub__batch_size": 0}, "methods.scrub.batch_size: a batch size"),
        ({"methods__gradient_ascent__forget_sets": ["nope"]}, "methods.gradient_ascent"),
        ({"dataset__name": "imagenet"}, "dataset.name"),
        ({"paper__interval": "percentile"}, "paper.interval"),
        ({"paper__delete_fraction": 1.0}, "paper.delete_fraction"),
    ],
)
def test_bad_config_names_the_key(changes, key):
    with pytest.raises(ConfigError) as error:
        validate(edited(**changes))
    assert key in str(error.value)


def test_indices_forget_set_checks_range_and_emptiness(tmp_path):
    np.save(tmp_path / "outside.npy", np.array([0, 5, 99999]))
    np.save(tmp_path / "empty.npy", np.array([], dtype=np.int64))
    (tmp_path / "good.txt").write_text("3\n1\n2\n2\n")
    config = edited(forget_sets={"outside": {"kind": "indices", "path": "outside.npy"}},
                    methods={"do_nothing": None})
    with pytest.raises(ConfigError, match=r"forget_sets.outside.path: index 99999"):
        validate(config, base_dir=tmp_path)
    config = edited(forget_sets={"empty": {"kind": "indices", "path": "empty.npy"}},
                    methods={"do_nothing": None})
    with pytest.raises(ConfigError, match=r"forget_sets.empty is empty"):
        validate(config, base_dir=tmp_path)
    config = edited(forget_sets={"missing": {"kind": "indices", "path": "missing.npy"}},
                    methods={"do_nothing": None})
    with pytest.raises(ConfigError, match=r"forget_sets.missing.path: .*does not exist"):
        validate(config, base_dir=tmp_path)
    config = edited(forget_sets={"good": {"kind": "indices", "path": "good.txt"}},
                    methods={"do_nothing": None})
    # good.txt lists 2 twice: kept once, with a warning naming the file and the count.
    with pytest.warns(ForgetSetWarning, match=r"forget_sets.good.path: .*good.txt' lists 1 "
                                              r"duplicate index"):
        validate(config, base_dir=tmp_path)
    np.save(tmp_path / "twice.npy", np.array([4, 4, 7, 7, 7, 9]))
    with pytest.warns(ForgetSetWarning, match=r"twice.npy' lists 3 duplicate indices"):
        indices = make_forget_set("twice", {"kind": "indices", "path": "twice.npy"},
                                  np.zeros(20), tmp_path)
    np.testing.assert_array_equal(indices, [4, 7, 9])


def test_zero_epochs_is_accepted():
    # 0 epochs leaves the model as it is: a legitimate grid corner, unlike a negative count.
    validate(edited(methods__gradient_descent__epochs=0))


def test_grids_expand_with_stable_config_ids():
    config = with_defaults(edited(methods={"gradient_ascent": {"lr": [0.001, 0.01],
                                                               "epochs": [1, 3]}}))
    settings = method_settings(config)
    assert len(settings) == 4
    assert len({s.config_id for s in settings}) == 4
    again = method_settings(with_defaults(edited(
        methods={"gradient_ascent": {"epochs": [1, 3], "lr": [0.001, 0.01]}})))
    assert [s.config_id for s in settings] == [s.config_id for s in again]
    # Writing a default out explicitly, or as an int, does not change the id.
    implicit = method_settings(with_defaults(edited(methods={"gradient_ascent": None})))
    explicit = method_settings(with_defaults(edited(
        methods={"gradient_ascent": {"momentum": 0, "lr": 0.01}})))
    assert implicit[0].config_id == explicit[0].config_id


def test_a_list_valued_hyperparameter_is_one_value_and_its_grid_a_list_of_lists():
    single = method_settings(with_defaults(edited(methods={"scrub": {"lr_decay_epochs": [2, 4]}})))
    assert [s.params["lr_decay_epochs"] for s in single] == [[2, 4]]
    default = method_settings(with_defaults(edited(methods={"scrub": None})))
    assert default[0].params["lr_decay_epochs"] == [3, 5, 9]
    grid = method_settings(with_defaults(edited(
        methods={"scrub": {"lr_decay_epochs": [[3, 5, 9], [], [2]], "epochs": [3, 10]}})))
    assert [s.params["lr_decay_epochs"] for s in grid] == [[3, 5, 9], [], [2]] * 2
    assert len({s.config_id for s in grid}) == 6
    assert grid[0].config_id == method_settings(with_defaults(edited(
        methods={"scrub": {"epochs": 3}})))[0].config_id
    with pytest.raises(ConfigError, match=r"methods.scrub.lr_decay_epochs\[1\]: expected an int"):
        method_settings(with_defaults(edited(methods={"scrub": {"lr_decay_epochs": [3, 4.5]}})))
    with pytest.raises(ConfigError, match=r"methods.scrub.lr_decay_epochs: expected a list"):
        method_settings(with_defaults(edited(methods={"scrub": {"lr_decay_epochs": 3}})))


def test_a_text_hyperparameter_takes_only_its_choices():
    settings = method_settings(with_defaults(edited(
        methods={"ssd": {"importance_order": ["index", "retain_then_forget"]}})))
    assert [s.params["importance_order"] for s in settings] == ["index", "retain_then_forget"]
    with pytest.raises(ConfigError, match=r"methods.ssd.importance_order: expected one of"):
        method_settings(with_defaults(edited(methods={"ssd": {"importance_order": "shuffled"}})))


def test_class_only_methods_refuse_other_forget_sets():
    config = edited(methods={"pbu": None})  # runs on every forget set, random_60 included
    with pytest.raises(ConfigError, match=r"methods.pbu: pbu forgets whole classes only"):
        validate(config)
    with pytest.raises(ConfigError, match=r"methods.unsir: unsir forgets whole classes only"):
        validate(edited(methods={"unsir": {"forget_sets": ["random_60"]}}))


def test_named_entries_can_reuse_an_implementation():
    config = with_defaults(edited(methods={
        "ga_slow": {"method": "gradient_ascent", "lr": 0.001, "forget_sets": ["class_3"]},
        "gradient_ascent": None,
    }))
    slow, plain = method_settings(config)
    assert slow.entry == "ga_slow" and slow.implementation == "gradient_ascent"
    assert slow.forget_sets == ("class_3",)
    assert plain.forget_sets == ("random_60", "class_3")


def test_model_seeds_are_stable_and_distinct():
    assert model_seed(0, "original", "", 3) == model_seed(0, "original", "", 3)
    seeds = {model_seed(0, role, name, k) for role in ("original", "oracle")
             for name in ("a", "b") for k in range(50)}
    assert len(seeds) == 200


def test_schema_lists_the_typed_sections_choices_and_keys():
    """The schema repeats options.py's choices and optional keys; they must not drift apart."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]
    for section, cls in SECTIONS.items():
        properties = schema[section]["properties"]
        for field in dataclasses.fields(cls):
            assert field.name in properties, f"{section}.{field.name} is not in the schema"
            if typing.get_origin(typing.get_type_hints(cls)[field.name]) is Literal:
                assert tuple(properties[field.name]["enum"]) == choices(cls, field.name)


def test_the_resolved_config_has_one_key_order_whatever_the_files(tmp_path):
    # Jobs' params are built from the resolved config and compared by repr(), where key order
    # shows; every forget-set kind that can be validated without published files.
    (tmp_path / "listed.txt").write_text("3\n1\n4\n")
    config = edited(forget_sets={
        "random_60": {"seed": 0, "size": 60, "kind": "random"},
        "class_3": {"label": 3, "kind": "class"},
        "listed": {"path": "listed.txt", "kind": "indices"},
        "pc1": {"solver": "exact", "size": 40, "kind": "datamodel_pc", "component": 1},
        "near": {"size": 30, "models": 2, "embedding": "penultimate", "kind": "nearest_neighbors",
                 "anchor": 6},
        "worst": {"size": 30, "proxy": "bilevel", "kind": "worst_case", "gamma": 0.5},
    }, datamodels={"ridge": 0.1, "n_subset_models": 100},
        privacy={"metrics": ["lira", "competition"], "delta": 1e-4})
    config["models"]["source"] = {"layout": "train"}
    written = validate(config, tmp_path)
    for order in (sorted, reversed_keys, lambda keys: keys[1:] + keys[:1]):
        other = validate(reordered(config, order), tmp_path)
        assert other == written
        # Key order inside each section and forget set; the names of forget sets and
        # methods keep the file's order (tables list them so), so compare by name. Method
        # entries reach jobs as settings, whose params take the method's own order.
        for section in set(written) - {"forget_sets", "methods"}:
            assert repr(other[section]) == repr(written[section]), section
        for name in written["forget_sets"]:
            assert repr(other["forget_sets"][name]) == repr(written["forget_sets"][name]), name
        assert settings_params(other) == settings_params(written)
    # config.yaml, written in the schema's order, resolves to the order it had before the order
    # was made canonical (defaults' keys first, then the file's): finished runs keep their params.
    default = validate(DEFAULT)
    assert list(default["forget_sets"]["random_60"]) == ["kind", "size", "seed"]
    assert list(default["dataset"]) == [
        "val_fraction", "split_seed", "data_dir", "name", "verify_checksums"]


def settings_params(config):
    return sorted((s.entry, s.config_id, repr(s.params)) for s in method_settings(config))


def test_a_short_config_takes_the_sections_it_leaves_out_from_the_default():
    """A user's config states only what differs: every required section it omits is the
    default config's, whole; a section it gives is used as written."""
    import yaml

    from klomflow.config import DEFAULT_CONFIG_PATH, validate

    default = validate(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()))
    short = {"train": {"epochs": 2}, "methods": {"do_nothing": None}}
    resolved = validate(short)
    for section in ("dataset", "model", "models", "forget_sets", "klom"):
        assert resolved[section] == default[section], section
    # Given sections are not merged with the default's: train.lr is the typed default
    # (0.05), not the default config's 0.1, and only do_nothing is scored.
    assert resolved["train"]["epochs"] == 2 and resolved["train"]["lr"] == 0.05
    assert default["train"]["lr"] == 0.1
    assert list(resolved["methods"]) == ["do_nothing"]


def test_a_short_config_is_still_checked_key_by_key():
    from klomflow.config import ConfigError, validate

    with pytest.raises(ConfigError, match="train: Additional properties .*'epoch'"):
        validate({"train": {"epoch": 2}})
