"""Code fingerprints: they follow what runs, not comments or layout, and they find a
module's own helpers through its imports without importing anything."""

import textwrap

from klomflow.fingerprints import code_of, fingerprint, local_imports


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_comments_layout_and_docstrings_leave_the_code_as_it_was():
    original = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    reworded = '# a comment\n\ndef f( x ):  # why\n    """Other doc."""\n\n    return x+1\n'
    assert code_of(original) == code_of(reworded)
    assert code_of(original) != code_of('def f(x):\n    """Doc."""\n    return x + 2\n')
    # A string that is not a docstring is code.
    assert code_of("x = 1\n'a'\n") != code_of("x = 1\n'b'\n")


def test_local_imports_follow_helpers_transitively_and_stop_at_the_folder(tmp_path):
    method = write(tmp_path, "my_method.py", """
        import os
        import numpy as np
        import helpers
        from tools.losses import loss
        from tools import schedule
    """)
    helpers = write(tmp_path, "helpers.py", "from deeper import value\n")
    deeper = write(tmp_path, "deeper.py", "value = 1\n")
    init = write(tmp_path, "tools/__init__.py", "")
    losses = write(tmp_path, "tools/losses.py", "from .schedule import rate\nloss = rate\n")
    schedule = write(tmp_path, "tools/schedule.py", "rate = 0.1\n")
    write(tmp_path, "unused.py", "x = 1\n")
    assert local_imports(method, tmp_path) == sorted(
        [helpers, deeper, init, losses, schedule])


def test_a_helper_edit_moves_the_fingerprint_and_a_comment_does_not(tmp_path):
    method = write(tmp_path, "m.py", "import helper\n\ndef unlearn(model, data, params):\n"
                                    "    return helper.step(model)\n")
    helper = write(tmp_path, "helper.py", "def step(model):\n    return model\n")

    def current():
        return fingerprint([method, *local_imports(method, tmp_path)], tmp_path)

    first = current()
    helper.write_text("# only a comment\ndef step(model):\n    return model\n")
    assert current() == first
    helper.write_text("def step(model):\n    return None\n")
    assert current() != first


def test_local_imports_can_be_kept_to_named_packages(tmp_path):
    # A shared root such as site-packages: only the method's own package is followed.
    method = write(tmp_path, "mine/method.py", "import heavy\nfrom mine import helper\n")
    write(tmp_path, "mine/__init__.py", "")
    helper = write(tmp_path, "mine/helper.py", "x = 1\n")
    heavy = write(tmp_path, "heavy.py", "x = 2\n")
    assert heavy in local_imports(method, tmp_path)
    assert local_imports(method, tmp_path, packages={"mine"}) == sorted(
        [tmp_path / "mine" / "__init__.py", helper])
