import numpy as np
import pytest

from klomflow.forget_sets.kinds import ForgetSetError, is_whole_class, make_forget_set

LABELS = np.arange(200) % 10


def test_random_forget_sets_are_deterministic_sorted_int64():
    first = make_forget_set("r", {"kind": "random", "size": 20, "seed": 4}, LABELS)
    second = make_forget_set("r", {"kind": "random", "size": 20, "seed": 4}, LABELS)
    other = make_forget_set("r", {"kind": "random", "size": 20, "seed": 5}, LABELS)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    assert first.dtype == np.int64 and len(first) == 20 and np.all(np.diff(first) > 0)


def test_class_forget_set_is_the_whole_class():
    indices = make_forget_set("c", {"kind": "class", "label": 7}, LABELS)
    assert np.all(LABELS[indices] == 7) and len(indices) == 20
    assert is_whole_class(indices, LABELS)
    assert not is_whole_class(indices[:-1], LABELS)


def test_unknown_class_is_refused():
    with pytest.raises(ForgetSetError, match="forget_sets.c.label=11"):
        make_forget_set("c", {"kind": "class", "label": 11}, LABELS)


def test_index_files_npy_and_text(tmp_path):
    np.save(tmp_path / "f.npy", np.array([5, 3, 3]))
    (tmp_path / "f.txt").write_text("5 3\n")
    for name in ("f.npy", "f.txt"):
        indices = make_forget_set("i", {"kind": "indices", "path": name}, LABELS, tmp_path)
        np.testing.assert_array_equal(indices, [3, 5])
    (tmp_path / "bad.txt").write_text("1.5\n")
    with pytest.raises(ForgetSetError, match="non-integer"):
        make_forget_set("i", {"kind": "indices", "path": "bad.txt"}, LABELS, tmp_path)
