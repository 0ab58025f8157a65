"""Methods outside klomflow (`user_methods`): planned from their syntax tree without being
imported, refused before any job with a message naming the key and the file, versioned by
the fingerprint of their code (reruns follow it), and run by the jobs as a built-in is."""

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
from workflow import REPOSITORY, SNAKEFILE, tiny_config, write_config

from klomflow.config import ConfigError, method_settings, method_specs
from klomflow.unlearning.methods.registry import EXTRA_INPUTS, REGISTRY

# A user's method: it imports torch at its top (planning must not run this file) and a
# helper of its own; it scales every weight, so its effect has a closed form.
METHOD = '''
"""Scale every weight by `scale`."""
import torch  # noqa: F401

from helpers import scaled

SPEC = {
    "defaults": {"scale": 0.5, "mode": "all", "steps": [1, 2]},
    "choices": {"mode": ["all", "none"]},
    "diagnostic": True,
    "needs": ["datamodel_rows"],
}


def unlearn(model, data, params):
    return scaled(model, params["scale"])
'''
HELPER = '''
import torch


def scaled(model, factor):
    with torch.no_grad():
        for value in model.parameters():
            value.mul_(factor)
    return model
'''
# The same without `needs`, for configs without datamodels.
PLAIN_METHOD = METHOD.replace('"needs": ["datamodel_rows"],', "")


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def method_folder(folder: Path, method=METHOD, helper=HELPER) -> Path:
    """A folder holding a method file (mine.py) and its helper (helpers.py)."""
    write(folder, "mine.py", method)
    write(folder, "helpers.py", helper)
    return folder / "mine.py"


def user_config(user_methods: dict, methods=None) -> dict:
    return {"forget_sets": {"random_30": {"kind": "random", "size": 30}},
            "methods": methods or {name: None for name in user_methods},
            "user_methods": user_methods}


def test_a_user_method_is_read_from_its_syntax_tree_without_running_it(tmp_path):
    # Were the file run, its first line would raise.
    method_folder(tmp_path / "methods", "raise RuntimeError('planning ran the file')\n" + METHOD)
    specs = method_specs(user_config({"mine": {"path": "methods/mine.py"}}), tmp_path)
    assert set(REGISTRY) < set(specs)  # the built-ins, and the user's
    spec = specs["mine"]
    assert spec.defaults == {"scale": 0.5, "mode": "all", "steps": [1, 2]}
    assert spec.choices == {"mode": ("all", "none")} and spec.needs == ("datamodel_rows",)
    assert spec.diagnostic and not spec.class_only and not spec.outputs_logits
    assert spec.version.startswith("code-") and spec.source.file == tmp_path / "methods/mine.py"
    assert "mine" not in sys.modules and "helpers" not in sys.modules
    # Entries use it like a built-in: by name, by alias, with grids.
    settings = method_settings(user_config({"mine": {"path": "methods/mine.py"}}, {
        "mine": None, "gentle": {"method": "mine", "scale": [0.25, 0.75], "mode": "none"}}),
        base_dir=tmp_path)
    assert [(s.entry, s.implementation, s.params["scale"], s.params["mode"])
            for s in settings] == [("mine", "mine", 0.5, "all"), ("gentle", "mine", 0.25, "none"),
                                   ("gentle", "mine", 0.75, "none")]


def test_planning_a_user_method_that_imports_torch_imports_no_torch(tmp_path):
    method_folder(tmp_path / "methods", PLAIN_METHOD)
    config = tiny_config() | {"user_methods": {"mine": {"path": "methods/mine.py"}},
                              "methods": {"do_nothing": None, "mine": {"scale": [0.5, 2.0]}}}
    write_config(tmp_path, config)
    code = ("import sys; from klomflow.config import load, method_settings, method_specs\n"
            f"config = load({str(tmp_path / 'config.yaml')!r})\n"
            f"specs = method_specs(config, {str(tmp_path)!r})\n"
            "assert len(method_settings(config, specs)) == 3\n"
            "assert 'torch' not in sys.modules, 'planning imported torch'")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPOSITORY), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


NO_UNLEARN = "def unlearn_model(model, data, params):\n    return model\n"
UNLEARN = "def unlearn(model, data, params):\n    return model\n"


@pytest.mark.parametrize("files, user_methods, methods, key, named", [
    ({}, {"mine": {"path": "methods/absent.py"}}, None, "user_methods.mine.path", "absent.py"),
    ({}, {"mine": {"module": "no_such_package_xyz.method"}}, None, "user_methods.mine.module",
     "no_such_package_xyz"),
    ({"mypkg/__init__.py": ""}, {"mine": {"module": "mypkg.absent"}}, None,
     "user_methods.mine.module", "mypkg.absent"),
    ({}, {"mine": {"entry_point": "no_such_entry_xyz"}}, None,
     "user_methods.mine.entry_point", "no_such_entry_xyz"),
    ({"mine.py": NO_UNLEARN}, {"mine": {"path": "mine.py"}}, None, "user_methods.mine.path",
     "mine.py defines no top-level `unlearn`"),
    ({"mine.py": "def unlearn(:\n"}, {"mine": {"path": "mine.py"}}, None,
     "user_methods.mine.path", "mine.py, line 1: not valid Python"),
    ({"mine.py": "import helper\n" + UNLEARN, "helper.py": "x = (\n"},
     {"mine": {"path": "mine.py"}}, None, "user_methods.mine.path",
     "helper.py, line 1: not valid Python"),
    ({"mine.py": "DEFAULTS = {}\nSPEC = {'defaults': DEFAULTS}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, None, "user_methods.mine.path",
     "mine.py, line 2: SPEC is not a literal"),
    ({"mine.py": "SPEC = {'default': {'lr': 0.1}}\n" + UNLEARN}, {"mine": {"path": "mine.py"}},
     None, "user_methods.mine.path", "mine.py: SPEC has an unknown key 'default'"),
    ({"mine.py": "SPEC = {'class_only': 'yes'}\n" + UNLEARN}, {"mine": {"path": "mine.py"}},
     None, "user_methods.mine.path", "mine.py: SPEC['class_only'] must be True or False"),
    ({"mine.py": "SPEC = {'defaults': {'lr': None}}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, None, "user_methods.mine.path",
     "mine.py: SPEC['defaults']['lr'] must be"),
    ({"mine.py": "SPEC = {'needs': ['oracle_logits']}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, None, "user_methods.mine.path",
     "mine.py: SPEC['needs'] names ['oracle_logits'], which the workflow cannot provide"),
    ({"mine.py": "SPEC = {'defaults': {'m': 'a'}, 'choices': {'m': ['b']}}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, None, "user_methods.mine.path",
     "mine.py: SPEC['choices']['m']"),
    ({"mine.py": "SPEC = {'defaults': {'forget_sets': 1}}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, None, "user_methods.mine.path",
     "mine.py: SPEC['defaults'] uses 'forget_sets'"),
    ({"random.py": UNLEARN}, {"mine": {"path": "random.py"}}, None, "user_methods.mine.path",
     "random.py: its name 'random' is also the name of the module"),
    ({"mine.py": UNLEARN}, {"scrub": {"path": "mine.py"}}, None, "user_methods.scrub",
     "(path 'mine.py') is the name of a built-in method"),
    ({"mine.py": UNLEARN}, {"oracle": {"path": "mine.py"}}, {"do_nothing": None},
     "user_methods.oracle", "(path 'mine.py') is reserved"),
    ({"mine.py": UNLEARN}, {"mine": {"path": "mine.py", "module": "mine"}}, None,
     "user_methods.mine", "exactly one of path, module, entry_point"),
    ({"mine.py": "SPEC = {'defaults': {'scale': 0.5}}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, {"mine": {"scael": 0.1}}, "methods.mine.scael",
     "unknown hyperparameter of mine (its SPEC is in"),
    ({"mine.py": "SPEC = {'defaults': {'scale': 0.5}}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, {"gentle": {"method": "mine", "scael": 0.1}},
     "methods.gentle.scael", "unknown hyperparameter of mine (its SPEC is in"),
    ({"mine.py": "SPEC = {'defaults': {'scale': 0.5}}\n" + UNLEARN},
     {"mine": {"path": "mine.py"}}, {"mine": {"scale": "big"}}, "methods.mine.scale",
     "expected a number"),
])
def test_a_bad_user_method_is_refused_naming_the_key_and_the_file(
        tmp_path, files, user_methods, methods, key, named):
    for name, text in files.items():
        write(tmp_path, name, text)
    with pytest.raises(ConfigError) as error:
        method_settings(user_config(user_methods, methods), base_dir=tmp_path)
    message = str(error.value)
    assert message.startswith(f"{key}: ") or message.startswith(f"{key} "), message
    assert named in message, message
    (source,) = user_methods.values()
    if list(source) == ["path"] and source["path"] in files:  # the file, resolved, is named
        assert str(tmp_path / source["path"]) in message or "(path " in message, message


def version_of(path: Path) -> str:
    return method_specs(user_config({"mine": {"path": path.name}}), path.parent)["mine"].version


def test_the_version_follows_the_code_of_the_method_and_its_helpers(tmp_path):
    method = method_folder(tmp_path)
    helper, first = tmp_path / "helpers.py", version_of(method)
    # Comments, docstrings and layout are not code; nor is a file the method does not import.
    method.write_text(METHOD.replace('"""Scale every weight by `scale`."""',
                                     '"""Another docstring."""\n# a comment\n'))
    helper.write_text("# why the helper is so\n" + HELPER.replace("factor):", "factor):  # why"))
    write(tmp_path, "unused.py", "x = 1\n")
    assert version_of(method) == first
    write(tmp_path, "unused.py", "x = 2\n")
    assert version_of(method) == first
    # An edit to what runs, in the method or in its helper, moves it.
    method.write_text(METHOD.replace('params["scale"]', 'params["scale"] * 2'))
    moved_by_method = version_of(method)
    assert moved_by_method != first
    method_folder(tmp_path)
    assert version_of(method) == first
    helper.write_text(HELPER.replace("value.mul_(factor)", "value.mul_(factor * 2)"))
    assert version_of(method) not in (first, moved_by_method)


def test_a_module_and_an_entry_point_are_found_without_importing_them(tmp_path, monkeypatch):
    # A package on sys.path, registered by a distribution's entry point (a .dist-info).
    write(tmp_path, "their_methods/__init__.py", "raise RuntimeError('imported')\n")
    write(tmp_path, "their_methods/helpers.py", HELPER)
    write(tmp_path, "their_methods/scaling.py",
          METHOD.replace("from helpers import", "from .helpers import").replace(
              "def unlearn(", "def scale_weights("))
    write(tmp_path, "their_methods-0.1.dist-info/METADATA",
          "Metadata-Version: 2.1\nName: their-methods\nVersion: 0.1\n")
    write(tmp_path, "their_methods-0.1.dist-info/entry_points.txt",
          "[klomflow.methods]\nscaling = their_methods.scaling:scale_weights\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    by_entry = method_specs(user_config({"mine": {"entry_point": "scaling"}}))["mine"]
    by_module = method_specs(user_config(
        {"mine": {"module": "their_methods.scaling:scale_weights"}}))["mine"]
    assert by_entry == by_module
    source = by_entry.source
    assert source.file == tmp_path / "their_methods/scaling.py" and source.root == tmp_path
    assert source.function == "scale_weights" and by_entry.defaults["scale"] == 0.5
    # Its helpers are found through the relative import, and their code moves the version.
    assert set(source.own_files()) == {source.file, tmp_path / "their_methods/helpers.py",
                                       tmp_path / "their_methods/__init__.py"}
    write(tmp_path, "their_methods/helpers.py", HELPER.replace("mul_(factor)", "mul_(-factor)"))
    assert method_specs(user_config({"mine": {"entry_point": "scaling"}}))["mine"].version \
        != by_entry.version
    assert "their_methods" not in sys.modules
    # Without the :function, `unlearn` is looked for and here missing.
    with pytest.raises(ConfigError, match="user_methods.mine.module: .*scaling.py defines no "
                                          "top-level `unlearn`"):
        method_specs(user_config({"mine": {"module": "their_methods.scaling"}}))


def test_an_installed_method_is_fingerprinted_on_its_own_distribution_only(
        tmp_path, monkeypatch):
    # In site-packages, the method's imports of other distributions (here `heavy`, as torch
    # would be) are not its code: following them would parse thousands of files.
    site = tmp_path / "site-packages"
    write(site, "mine_pkg/__init__.py", "")
    write(site, "mine_pkg/method.py", "import heavy\nfrom mine_pkg import tools\n" + UNLEARN)
    write(site, "mine_pkg/tools.py", "x = 1\n")
    write(site, "heavy.py", "x = 1\n")
    write(site, "mine_pkg-1.0.dist-info/METADATA",
          "Metadata-Version: 2.1\nName: mine-pkg\nVersion: 1.0\n")
    write(site, "mine_pkg-1.0.dist-info/top_level.txt", "mine_pkg\n")
    monkeypatch.syspath_prepend(str(site))
    spec = method_specs(user_config({"mine": {"module": "mine_pkg.method"}}))["mine"]
    assert spec.source.packages == ("mine_pkg",)
    assert set(spec.source.own_files()) == {site / "mine_pkg/method.py",
                                            site / "mine_pkg/tools.py",
                                            site / "mine_pkg/__init__.py"}


def test_a_user_method_runs_in_an_unlearning_job_as_a_built_in_does(tmp_path):
    import numpy as np
    import torch
    from test_runs import untrained_checkpoint

    from klomflow.config import validate
    from klomflow.jobs.runs import unlearn_shard
    from klomflow.unlearning import twins

    method_folder(tmp_path / "methods", PLAIN_METHOD)
    config = tiny_config() | {"user_methods": {"mine": {"path": "methods/mine.py"}},
                              "methods": {"mine": {"scale": 0.25}}}
    config = validate(config, tmp_path)
    (setting,) = method_settings(config, base_dir=tmp_path)
    checkpoint = untrained_checkpoint(config)
    _, runs, states = unlearn_shard(config, setting, "random_30", np.arange(10), checkpoint,
                                    log=lambda message: None, base_dir=tmp_path,
                                    device=torch.device("cpu"))
    for record, state in zip(checkpoint["models"], states):
        for name, value in record["state_dict"].items():  # every weight times 0.25
            torch.testing.assert_close(state[name], value * 0.25)
    assert (runs["changed_weights"] > 0).all()
    # One model at a time: a user method has no ensemble twin, even under a twin's name
    # and version.
    method = method_specs(config, tmp_path)["mine"].load()
    assert method.defaults["scale"] == 0.5 and method.diagnostic
    assert twins.together(replace(method, name="gradient_descent", version="1")) is None
    assert twins.together(replace(method, name="gradient_descent", version="1",
                                  source=None)) is not None


def test_the_workflow_provides_every_input_a_method_may_need():
    text = (REPOSITORY / "rules" / "functions" / "unlearn.smk").read_text()
    provided = text.split("def extra_inputs():", 1)[1].split("\n\n", 1)[0]
    for name in EXTRA_INPUTS:
        assert f'"{name}":' in provided, name
    assert {need for spec in REGISTRY.values() for need in spec.needs} <= set(EXTRA_INPUTS)


def test_an_edit_reruns_exactly_that_methods_unlearning_jobs_and_planning_imports_no_torch(
        tmp_path):
    """Four copies of a method folder: as written, its method edited, its helper edited, its
    comments edited; a config for each, and a second user method that stays as it is.
    Planned in one process whose `torch` fails on import."""
    method = PLAIN_METHOD
    copies = {
        "written": (method, HELPER),
        "method_edited": (method.replace('params["scale"]', 'params["scale"] ** 2'), HELPER),
        "helper_edited": (method, HELPER.replace("mul_(factor)", "mul_(-factor)")),
        "comments_edited": ("# only comments\n" + method, HELPER + "# and here\n"),
    }
    method_folder(tmp_path / "theirs", method)
    config = tiny_config()
    config["forget_sets"] = {"random_30": config["forget_sets"]["random_30"]}
    config["methods"] = {"do_nothing": None, "mine": None,
                         "gentle": {"method": "mine", "scale": [0.25, 0.75]}, "theirs": None}
    for name, (method_text, helper_text) in copies.items():
        method_folder(tmp_path / name, method_text, helper_text)
        config["user_methods"] = {"mine": {"path": f"{name}/mine.py"},
                                  "theirs": {"path": "theirs/mine.py"}}
        write_config(tmp_path, config, f"{name}.yaml")
    blocker = tmp_path / "blocker"
    write(blocker, "torch.py", "raise ImportError('planning imported torch')\n")
    environment = dict(os.environ, KLOMFLOW_JOB_SERVER="off", PYTHONPATH=os.pathsep.join(
        [str(blocker), str(REPOSITORY), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, str(REPOSITORY / "tests" / "job_params.py"), str(SNAKEFILE),
         str(tmp_path), *(str(tmp_path / f"{name}.yaml") for name in copies)],
        capture_output=True, text=True, env=environment, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    plans = json.loads(result.stdout.split("JOB_PARAMS ", 1)[1])
    plans = {Path(path).stem: jobs for path, jobs in plans.items()}
    written = plans.pop("written")
    mine = {job for job in written if job.startswith("unlearn ")
            and ("/mine/" in job or "/gentle/" in job)}
    assert len(mine) == 3 * 2  # three settings, two shards each
    assert any("code-" in param for job in mine for param in written[job])
    for name, jobs in plans.items():
        assert jobs.keys() == written.keys(), name
        changed = {job for job in written if jobs[job] != written[job]}
        assert changed == (set() if name == "comments_edited" else mine), name


def test_the_tables_read_a_user_methods_defaults_and_flags(tmp_path):
    import json

    import pandas as pd

    from klomflow.reporting.summary import setting_hyperparameters
    from klomflow.reporting.tables import unchanged_weights_counts

    method_folder(tmp_path, PLAIN_METHOD)
    specs = method_specs(user_config({"mine": {"path": "mine.py"}}), tmp_path)
    defaults = {"scale": 0.5, "mode": "all", "steps": [1, 2]}
    params = [json.dumps(defaults), json.dumps(defaults | {"mode": "none"})]
    table = pd.DataFrame({"forget_set": "f", "method": ["mine", "gentle"],
                          "config_id": ["a", "b"], "implementation": "mine", "params": params})
    # Named by what differs from the SPEC's defaults, as a built-in's setting is.
    assert setting_hyperparameters(table, specs) == {("mine", "a"): "defaults",
                                                      ("gentle", "b"): "mode=none"}
    # Its models that kept every weight are counted (a user method changes weights).
    runs = pd.DataFrame({"forget_set": "f", "method": ["mine", "mine", "gentle"],
                         "config_id": ["a", "a", "b"], "changed_weights": [0, 5, 0]})
    assert unchanged_weights_counts(table, [runs], specs) == [1, 1]


def test_loading_imports_the_method_and_its_helpers_from_its_own_folder(tmp_path):
    import torch

    # Two methods whose helpers share a name, in one process: each runs its own.
    for name, factor in (("first", "2.0"), ("second", "3.0")):
        method_folder(tmp_path / name, PLAIN_METHOD,
                      HELPER.replace("mul_(factor)", f"mul_(factor * {factor})"))
    # And a package in the working folder, named as a module (not installed anywhere).
    write(tmp_path, "local_methods/__init__.py", "")
    write(tmp_path, "local_methods/helpers.py", HELPER.replace("mul_(factor)", "mul_(-factor)"))
    write(tmp_path, "local_methods/scaling.py",
          PLAIN_METHOD.replace("from helpers import", "from local_methods.helpers import"))
    specs = method_specs(user_config({"first": {"path": "first/mine.py"},
                                      "second": {"path": "second/mine.py"},
                                      "local": {"module": "local_methods.scaling"}}), tmp_path)
    for name, expected in (("first", 2.0), ("second", 3.0), ("first", 2.0), ("local", -1.0)):
        weight = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.ones_(weight.weight)
        method = specs[name].load()
        assert method.name == name and method.version == specs[name].version
        assert method.unlearn(weight, None, {"scale": 1.0}).weight.item() == expected, name
