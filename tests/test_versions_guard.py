"""The guard of the explicit code versions (tests/versions_guard.py): the committed lock
matches the code, and a change to a version's code without its version is caught, named
with the version to bump, while a change to comments or docstrings is not."""

import json
import shutil

import pytest
import versions_guard as guard

from klomflow.unlearning.methods.registry import REGISTRY

EVERY_METHOD = {f"method:{name}" for name in REGISTRY}
RECORD = "python tests/versions_guard.py record"


def test_the_lock_holds_every_version_and_the_code_it_covers():
    problems = guard.check()
    assert not problems, "\n\n".join(problems)


@pytest.fixture(scope="module")
def lock():
    """The lock of the checked-out code: a copy of it is the same code under another root."""
    return guard.current()


@pytest.fixture
def tree(tmp_path):
    """A copy of the package and the workflow scripts, to change without touching these."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("klomflow", "workflow_scripts"):
        shutil.copytree(guard.REPO / folder, tmp_path / folder, ignore=ignore)
    return tmp_path


def edit(root, relative, old, new):
    path = root / relative
    text = path.read_text()
    assert text.count(old) == 1, f"{relative}: {old!r} is not there once"
    path.write_text(text.replace(old, new))


def reported(problems):
    """The version keys the messages name (each starts "key: ")."""
    return {problem.split(": ", 1)[0] for problem in problems}


def test_a_copy_of_the_code_matches_the_lock(tree, lock):
    assert guard.check(tree, lock) == []


def test_a_method_changed_without_its_version_is_named_with_the_version_to_bump(tree, lock):
    edit(
        tree,
        "klomflow/unlearning/methods/scrub.py",
        'return params["lr"] * params["lr_decay_rate"] ** decays',
        'return params["lr"] * params["lr_decay_rate"] ** (decays + 1)',
    )
    problems = guard.check(tree, lock)
    assert reported(problems) == {"method:scrub"}
    [message] = problems
    assert "klomflow/unlearning/methods/scrub.py" in message
    assert "bump `version` of scrub in klomflow/unlearning/methods/registry.py (now '2')" in message
    assert f"{RECORD} method:scrub" in message


def test_comments_docstrings_and_layout_change_nothing(tree, lock):
    edit(
        tree,
        "klomflow/unlearning/methods/scrub.py",
        'return params["lr"] * params["lr_decay_rate"] ** decays',
        'return (params["lr"]  # the base rate\n            * params["lr_decay_rate"] ** decays)',
    )
    edit(
        tree,
        "klomflow/unlearning/methods/base.py",
        '"""The Method of registry entry `name` with the update rule `unlearn`."""',
        '"""The Method of registry entry `name`, with its update rule `unlearn`."""\n'
        "    # a comment",
    )
    edit(
        tree,
        "klomflow/metrics/klom.py",
        "\ndef klom_per_point(",
        "\n# a comment\ndef klom_per_point(",
    )
    assert guard.check(tree, lock) == []


def test_a_shared_helper_reports_every_method_that_uses_it(tree, lock):
    # Every method module builds its METHOD with base.implement.
    edit(
        tree,
        "klomflow/unlearning/methods/base.py",
        "return implement_spec(REGISTRY[name], unlearn)",
        "return implement_spec(REGISTRY[name.strip()], unlearn)",
    )
    problems = guard.check(tree, lock)
    assert reported(problems) == EVERY_METHOD
    assert all("klomflow/unlearning/methods/base.py" in problem for problem in problems)


def test_a_twin_is_covered_by_its_method_alone(tree, lock):
    # distillation.py holds the twins of scrub and bad_teaching; this line is scrub's.
    edit(
        tree,
        "klomflow/unlearning/twins/distillation.py",
        'group["lr"] = scrub_method.epoch_learning_rate(epoch, params)',
        'group["lr"] = 2 * scrub_method.epoch_learning_rate(epoch, params)',
    )
    assert reported(guard.check(tree, lock)) == {"method:scrub"}
    # A method's own entry in the twins' table is its alone too.
    tree_lock = guard.current(tree)
    edit(
        tree,
        "klomflow/unlearning/twins/__init__.py",
        '"scrub": ("2", scrub)',
        '"scrub": ("3", scrub)',
    )
    assert reported(guard.check(tree, tree_lock)) == {"method:scrub"}


def test_training_and_unlearning_parts_of_the_jobs_module_are_told_apart(tree, lock):
    runs = "klomflow/jobs/runs.py"
    edit(
        tree,
        runs,
        "torch.manual_seed(seed)  # any stray",
        "torch.manual_seed(seed + 1)  # any stray",
    )
    assert reported(guard.check(tree, lock)) == EVERY_METHOD  # _run_method: unlearning only
    tree_lock = guard.current(tree)
    edit(
        tree,
        runs,
        'generators = [torch.Generator().manual_seed(member["seed"] + 1)',
        'generators = [torch.Generator().manual_seed(member["seed"] + 2)',
    )
    problems = guard.check(tree, tree_lock)  # _train_together: training (and what trains)
    assert "training" in reported(problems) and not reported(problems) & EVERY_METHOD
    [message] = [problem for problem in problems if problem.startswith("training:")]
    assert "bump `TRAINING` in klomflow/versions.py (now '3')" in message


def test_klom_changed_without_its_version(tree, lock):
    edit(
        tree,
        "klomflow/metrics/klom.py",
        "def mean_shift_over_std(unlearned, oracle) -> np.ndarray:",
        "def mean_shift_over_std(unlearned, oracle) -> np.ndarray:\n    oracle = oracle + 0",
    )
    problems = guard.check(tree, lock)
    assert "klom" in reported(problems)
    [message] = [problem for problem in problems if problem.startswith("klom:")]
    assert "bump `VERSION` in klomflow/metrics/klom.py (now '2')" in message


def test_a_bumped_version_asks_to_be_recorded_and_recording_settles_it(tree, lock, tmp_path):
    edit(
        tree,
        "klomflow/unlearning/methods/registry.py",
        'MethodSpec("scrub", version="2",',
        'MethodSpec("scrub", version="3",',
    )
    edit(
        tree,
        "klomflow/unlearning/methods/scrub.py",
        'return params["lr"] * params["lr_decay_rate"] ** decays',
        'return params["lr"] * params["lr_decay_rate"] ** (decays + 1)',
    )
    [message] = guard.check(tree, lock)
    assert message.startswith("method:scrub: its version moved from '2' to '3'")
    assert f"{RECORD} method:scrub" in message
    lock_path = tmp_path / "versions.lock.json"
    lock_path.write_text(json.dumps(lock))
    recorded = guard.record(["method:scrub"], root=tree, lock_path=lock_path)
    assert recorded["method:scrub"]["version"] == "3"
    assert {key: entry for key, entry in recorded.items() if key != "method:scrub"} == {
        key: entry for key, entry in lock.items() if key != "method:scrub"
    }
    assert guard.check(tree, json.loads(lock_path.read_text())) == []


def test_a_version_missing_from_the_lock_is_reported(tree, lock):
    partial = {key: entry for key, entry in lock.items() if key != "method:dmm"}
    [message] = guard.check(tree, partial)
    assert message == (
        f"method:dmm: a version the lock (versions.lock.json) does not hold; "
        f"record it: {RECORD} method:dmm"
    )
