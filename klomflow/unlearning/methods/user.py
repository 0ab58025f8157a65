"""Methods that live outside klomflow: found, read and fingerprinted without importing them.

A user method is a Python module that the config's `user_methods` section names by
- `path`: its file, relative to the working folder; when it runs, the file's folder comes
  first on sys.path, so its helpers import as they would for `python method.py`;
- `module`: a dotted module name (`pkg.method`, or `pkg.method:function`), importable, or
  found in the working folder;
- `entry_point`: a name that an installed package registers under the entry-point group
  `klomflow.methods`, whose value is such a module name.

The module defines a top-level `unlearn(model, data, params) -> model`, the interface of
the built-ins (klomflow/unlearning/methods/base.py), and may define `SPEC`, a literal dict
with MethodSpec's fields: `defaults` (every hyperparameter with its default), `class_only`,
`needs`, `diagnostic`, `outputs_logits`, `choices`. Planning reads both from the syntax
tree and never imports the module: a method that imports torch at its top costs planning
nothing. Its version is "code-" and the fingerprint of its file and of the files of its own
that it imports (klomflow/fingerprints.py): an edit to what runs reruns exactly its jobs,
an edit to comments or docstrings reruns nothing, and nobody bumps a version by hand.
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import site
import sys
from dataclasses import dataclass
from pathlib import Path

from klomflow.fingerprints import fingerprint, local_imports
from klomflow.unlearning.methods.registry import EXTRA_INPUTS, MethodSpec

ENTRY_POINT_GROUP = "klomflow.methods"
# SPEC's keys, the types their values take, and how a message names those types.
SPEC_TYPES = {"defaults": (dict, "a dict {hyperparameter: default}"),
              "class_only": (bool, "True or False"), "diagnostic": (bool, "True or False"),
              "outputs_logits": (bool, "True or False"),
              "needs": ((list, tuple), "a list of names"),
              "choices": (dict, "a dict {hyperparameter: [allowed texts]}")}
_SCALARS = (bool, int, float, str)
# Set on the modules `UserSource.load_method` loads by path.
_LOADED_MARK = "__klomflow_user_method__"


class UserMethodError(ValueError):
    """A user method that cannot be planned; the message names its file."""


@dataclass(frozen=True)
class UserSource:
    """Where a user method's code is."""

    file: Path  # the module's file, resolved
    # Where its imports are looked up: the file's folder (path), or the folder holding its
    # top-level package (module, entry point).
    root: Path
    module: str | None = None  # the dotted name to import; None: load `file` by its path
    function: str = "unlearn"
    # The top-level names whose files are the method's own; None: every module under root.
    packages: tuple | None = None

    def own_files(self) -> list[Path]:
        """The module's file and every file of its own that it imports (not torch's)."""
        return [self.file, *local_imports(self.file, self.root, self.packages)]

    def version(self) -> str:
        """"code-" and the fingerprint of the code of `own_files`."""
        try:
            digest = fingerprint(self.own_files(), self.root)
        except SyntaxError as error:
            raise UserMethodError(f"{error.filename}, line {error.lineno}: not valid Python "
                                  f"({error.msg}); the method {self.file} imports it") from None
        return f"code-{digest}" + ("" if self.function == "unlearn" else f"-{self.function}")

    def load_method(self, spec: MethodSpec):
        """`spec`'s Method (klomflow.unlearning.methods.base): imports the module, and torch."""
        from klomflow.unlearning.methods.base import implement_spec

        function = getattr(self._import(), self.function, None)
        if not callable(function):
            raise UserMethodError(f"{self.file}: `{self.function}` is not a function once "
                                  f"imported")
        return implement_spec(spec, function)

    def _import(self):
        if self.module is not None:
            if str(self.root) not in sys.path:  # a package in the working folder
                sys.path.append(str(self.root))
            return importlib.import_module(self.module)
        # Its folder first, and its helpers imported afresh from there: a process that loaded
        # another folder's `helpers` (or this one's before an edit) must not hand that over.
        if str(self.file.parent) in sys.path:
            sys.path.remove(str(self.file.parent))
        sys.path.insert(0, str(self.file.parent))
        for helper in self.own_files()[1:]:
            parts = helper.relative_to(self.root).with_suffix("").parts
            sys.modules.pop(".".join(parts[:-1] if parts[-1] == "__init__" else parts), None)
        # Named after its file, as `import name` from a helper would name it; run afresh
        # each time, so a test that edits the file runs the edit.
        name = self.file.stem
        loader = importlib.util.spec_from_file_location(name, self.file)
        module = importlib.util.module_from_spec(loader)
        setattr(module, _LOADED_MARK, True)
        previous = sys.modules.get(name)
        sys.modules[name] = module
        try:
            loader.loader.exec_module(module)
        except BaseException:
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous
            raise
        return module


def _find_top_level(name: str, search=()):
    """The import system's spec of top-level module `name` (nothing is imported), else
    its spec in the folders `search`, else None."""
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None and search:
        found = importlib.machinery.PathFinder.find_spec(name, [str(Path(s)) for s in search])
    return found


def locate_path(path: str, base_dir=".") -> UserSource:
    """A method file named by its path, relative to `base_dir` (the working folder)."""
    file = (Path(base_dir) / path).resolve()
    if not file.is_file():
        raise UserMethodError(f"no file {path!r} (looked for {file})")
    if file.suffix != ".py":
        raise UserMethodError(f"{file}: a method is a Python file ending in .py")
    loaded = sys.modules.get(file.stem)
    if file.stem.isidentifier() and not getattr(loaded, _LOADED_MARK, False):
        # Its folder goes first on sys.path when it runs: a file named like a module the job
        # imports (random.py, torch.py) would replace that module. (A user method this
        # process loaded before, from another folder, is no such module.)
        other = _find_top_level(file.stem)
        origin = getattr(other, "origin", None)
        if other is not None and (origin is None or Path(origin).resolve() != file):
            raise UserMethodError(f"{file}: its name {file.stem!r} is also the name of the "
                                  f"module at {origin or other.name}, which it would hide "
                                  f"when it runs; rename the file")
    return UserSource(file, file.parent)


def _site_folders() -> set[Path]:
    folders = list(getattr(site, "getsitepackages", list)()) + [site.getusersitepackages()]
    return {Path(folder).resolve() for folder in folders}


def _own_packages(top: str, root: Path) -> tuple | None:
    """The top-level names of `top`'s distribution when `root` holds other distributions too
    (site-packages), so that a fingerprint follows its own files and not torch's; None
    (every module under `root`) for a folder of the user's own."""
    if root.name not in ("site-packages", "dist-packages") and root not in _site_folders():
        return None
    distributions = importlib.metadata.packages_distributions()
    mine = set(distributions.get(top, ()))
    return tuple(sorted({top} | {name for name, owners in distributions.items()
                                 if mine & set(owners)}))


def locate_module(value: str, search=()) -> UserSource:
    """A method module named `pkg.module` or `pkg.module:function`, found the way `import`
    would find it (then in the folders `search`), without importing anything."""
    dotted, _, function = value.partition(":")
    function = function or "unlearn"
    parts = dotted.split(".")
    if not all(part.isidentifier() for part in parts) or not function.isidentifier():
        raise UserMethodError(f"{value!r} is not a module name (pkg.module or "
                              f"pkg.module:function)")
    top = _find_top_level(parts[0], search)
    if top is None:
        raise UserMethodError(f"no module {parts[0]!r} is installed or in the working folder "
                              f"(for {dotted!r})")
    folders = [Path(folder) for folder in (top.submodule_search_locations or [])]
    if folders:  # a package; a namespace package has no __init__.py
        root = folders[0].parent
        file = Path(top.origin) if top.origin and top.has_location else None
    else:
        file = Path(top.origin) if top.origin and top.has_location else None
        root = file.parent if file else None
    for depth, part in enumerate(parts[1:], start=1):
        if not folders:
            raise UserMethodError(f"{'.'.join(parts[:depth])} ({file}) is a module, not a "
                                  f"package: it has no {part!r} (for {dotted!r})")
        for folder in folders:
            if (folder / part / "__init__.py").is_file():
                file, folders = folder / part / "__init__.py", [folder / part]
                break
            if (folder / f"{part}.py").is_file():
                file, folders = folder / f"{part}.py", []
                break
            if (folder / part).is_dir():
                file, folders = None, [folder / part]
                break
        else:
            raise UserMethodError(f"no module {'.'.join(parts[:depth + 1])!r} in "
                                  f"{', '.join(str(folder) for folder in folders)}")
    if file is None or file.suffix != ".py" or not file.is_file():
        raise UserMethodError(f"{dotted!r} ({file or 'a namespace package'}) is not a Python "
                              f"source file")
    root = root.resolve()
    return UserSource(file.resolve(), root, dotted, function, _own_packages(parts[0], root))


def locate_entry_point(name: str, search=()) -> UserSource:
    """The method an installed package registers as `name` in group `klomflow.methods`
    (read from its metadata; nothing is imported)."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        installed = sorted({entry.name for entry in
                            importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
        raise UserMethodError(f"no installed package registers {name!r} under the entry-point "
                              f"group {ENTRY_POINT_GROUP!r}; registered: {installed or 'none'}")
    values = sorted({entry.value for entry in found})
    if len(values) > 1:
        raise UserMethodError(f"installed packages register {name!r} under "
                              f"{ENTRY_POINT_GROUP!r} more than once: {values}")
    try:
        return locate_module(values[0], search)
    except UserMethodError as error:
        raise UserMethodError(f"entry point {name!r} = {values[0]!r}: {error}") from None


def _defines(tree: ast.Module, name: str) -> bool:
    """Whether the module's top level binds `name` (def, class, assignment or import)."""
    for statement in tree.body:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound = [statement.name]
        elif isinstance(statement, (ast.Assign, ast.AnnAssign)):
            targets = statement.targets if isinstance(statement, ast.Assign) else [
                statement.target]
            bound = [node.id for target in targets for node in ast.walk(target)
                     if isinstance(node, ast.Name)]
        elif isinstance(statement, (ast.Import, ast.ImportFrom)):
            bound = [alias.asname or alias.name.split(".")[0] for alias in statement.names]
        else:
            continue
        if name in bound:
            return True
    return False


def _spec_literal(tree: ast.Module, file: Path) -> dict:
    """The value of the module's top-level `SPEC = {...}` (the last one), or {}."""
    node = None
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "SPEC"
                for target in statement.targets):
            node = statement.value
        elif (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
              and statement.target.id == "SPEC" and statement.value is not None):
            node = statement.value
    if node is None:
        return {}
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise UserMethodError(
            f"{file}, line {node.lineno}: SPEC is not a literal; planning reads it without "
            "importing the file, so it holds only dicts, lists, numbers, text and True/False "
            "(no names, calls or arithmetic)") from None


def _is_value(value) -> bool:
    """A default the config can give: a number, text, True/False, or a list of those."""
    if isinstance(value, list):
        return all(isinstance(item, _SCALARS) for item in value)
    return isinstance(value, _SCALARS)


def checked_spec(spec, file: Path) -> dict:
    """`spec` (a SPEC literal) checked key by key; errors name `file` and the key."""
    if not isinstance(spec, dict):
        raise UserMethodError(f"{file}: SPEC must be a dict, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_TYPES), key=str)
    if unknown:
        raise UserMethodError(f"{file}: SPEC has an unknown key {unknown[0]!r}; known: "
                              f"{sorted(SPEC_TYPES)}")
    for key, (kind, described) in SPEC_TYPES.items():
        if key in spec and not isinstance(spec[key], kind):
            raise UserMethodError(f"{file}: SPEC[{key!r}] must be {described}, got "
                                  f"{spec[key]!r}")
    defaults = spec.get("defaults", {})
    for name, default in defaults.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise UserMethodError(f"{file}: SPEC['defaults']: a hyperparameter's name is a "
                                  f"config key like lr or batch_size, got {name!r}")
        if not _is_value(default):
            raise UserMethodError(f"{file}: SPEC['defaults'][{name!r}] must be a number, text, "
                                  f"True/False or a list of those, got {default!r}")
    needs = list(spec.get("needs", ()))
    cannot = [need for need in needs if need not in EXTRA_INPUTS]
    if cannot:
        raise UserMethodError(f"{file}: SPEC['needs'] names {cannot}, which the workflow "
                              f"cannot provide; it provides {list(EXTRA_INPUTS)}")
    for name, allowed in spec.get("choices", {}).items():
        if name not in defaults:
            raise UserMethodError(f"{file}: SPEC['choices'] names {name!r}, which is not in "
                                  f"SPEC['defaults']")
        if (not isinstance(allowed, (list, tuple))
                or not all(isinstance(text, str) for text in allowed)
                or defaults[name] not in allowed):
            raise UserMethodError(f"{file}: SPEC['choices'][{name!r}] must list the texts "
                                  f"{name} may take, its default {defaults[name]!r} among "
                                  f"them; got {allowed!r}")
    return spec


def read_user_method(name: str, source: UserSource) -> MethodSpec:
    """User method `name`'s MethodSpec, read from its source without importing it."""
    file = source.file
    try:
        tree = ast.parse(file.read_text(), str(file))
    except SyntaxError as error:
        raise UserMethodError(f"{file}, line {error.lineno}: not valid Python "
                              f"({error.msg})") from None
    if not _defines(tree, source.function):
        raise UserMethodError(
            f"{file} defines no top-level `{source.function}`; a method is a function "
            f"`{source.function}(model, data, params) -> model` at the top of its module")
    spec = checked_spec(_spec_literal(tree, file), file)
    return MethodSpec(name, defaults=dict(spec.get("defaults", {})), version=source.version(),
                      class_only=spec.get("class_only", False),
                      needs=tuple(spec.get("needs", ())),
                      diagnostic=spec.get("diagnostic", False),
                      outputs_logits=spec.get("outputs_logits", False),
                      choices={key: tuple(texts)
                               for key, texts in spec.get("choices", {}).items()},
                      source=source)
