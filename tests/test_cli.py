"""`klomflow init`: the user folder it writes (Snakefile as a module user, a short config,
a method with its own passing test, the workflow profile) and that it never overwrites."""

import importlib.util
import sys

import pytest
import yaml
from workflow import REPOSITORY

from klomflow import cli
from klomflow.config import validate


def test_init_writes_a_folder_whose_method_test_passes(tmp_path):
    folder = tmp_path / "mine"
    written = cli.init(folder, REPOSITORY / "Snakefile")
    names = sorted(str(path.relative_to(folder)) for path in written)
    assert names == ["Snakefile", "config.yaml", "methods/my_method.py",
                     "profiles/default/config.yaml", "tests/test_my_method.py"]
    snakefile = (folder / "Snakefile").read_text()
    assert f'"{(REPOSITORY / "Snakefile").as_posix()}"' in snakefile
    assert "use rule * from klomflow" in snakefile
    # The commented default config below the user's keys parses as nothing more.
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert set(config) == {"user_methods", "models", "methods"}
    spec = importlib.util.spec_from_file_location("generated_test",
                                                  folder / "tests" / "test_my_method.py")
    module = importlib.util.module_from_spec(spec)
    saved_path = list(sys.path)
    try:
        spec.loader.exec_module(module)  # puts methods/ on sys.path and imports my_method
        module.test_my_method_changes_the_weights()
    finally:
        sys.path[:] = saved_path
        sys.modules.pop("my_method", None)


def test_init_never_overwrites(tmp_path):
    (tmp_path / "config.yaml").write_text("mine\n")
    with pytest.raises(SystemExit, match="already holds config.yaml"):
        cli.init(tmp_path, REPOSITORY / "Snakefile")
    assert (tmp_path / "config.yaml").read_text() == "mine\n"


def test_the_checkouts_workflow_is_found():
    assert cli.workflow_snakefile() == REPOSITORY / "Snakefile"


def test_the_written_config_validates_with_the_defaults(tmp_path):
    folder = tmp_path / "mine"
    cli.init(folder, REPOSITORY / "Snakefile")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    resolved = validate(config, base_dir=folder)
    assert resolved["models"]["n_originals"] == 8
    assert list(resolved["methods"]) == ["do_nothing", "my_method"]
