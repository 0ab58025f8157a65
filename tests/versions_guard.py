"""The guard of the explicit code versions (docs/reruns.md, "Code versions").

Built-in methods, training, KLOM and the other stages below keep explicit versions that
enter their rules' params, so that a refactor never retrains a cluster's worth of models.
The guard makes that route safe: `VERSIONS` names, for each version, where it is written
and the workflow scripts of the rules whose params hold it; the code those scripts run is
found from there (`reached`), down to the functions, classes and constants each module
uses, so a change to a shared module touches only the versions whose code uses the changed
part. tests/versions.lock.json records, per version, its value and a fingerprint of each
file's reached code (its syntax tree without docstrings or comments,
`klomflow.fingerprints.code_of`). tests/test_versions_guard.py fails when a fingerprint
moved while its version did not, and names the version to bump; a change that leaves the
outputs as they were is recorded instead:

    python tests/versions_guard.py record method:scrub      # the keys the test names
    python tests/versions_guard.py record --all             # every key (after a move)
    python tests/versions_guard.py                          # the table: key, version, files

Not followed (`NOT_FOLLOWED`): how a job is handed over, run and logged; the files that
hold the versions themselves (and the methods' defaults, which enter the params by
themselves); the twins' table, of which each method takes its own entry. A module-level
`VERSION` or `__version__` is a version, not behaviour: it is left out of the code.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __name__ == "__main__":  # run as a script: this checkout's klomflow, not an installed one
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from klomflow.fingerprints import code_of, from_module  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LOCK = Path(__file__).resolve().with_name("versions.lock.json")
RECORD = "python tests/versions_guard.py record"
SCRIPTS = "workflow_scripts"
REGISTRY = "klomflow/unlearning/methods/registry.py"
TWINS = "klomflow/unlearning/twins/__init__.py"

# Module-level names that hold a version (or the release number): not behaviour.
VERSION_NAMES = ("VERSION", "__version__")

# Neither hashed nor followed, with why. "path" is the whole file, "path::name" one name.
NOT_FOLLOWED = {
    "workflow_scripts/workflow_job.py": "hands a job to the job server, opens its log",
    "klomflow/job_server.py": "runs a job in a warm process; what it computes is the script's",
    "klomflow/logs.py": "log files",
    "klomflow/versions.py": "the versions themselves",
    REGISTRY: "the methods' versions, and their defaults, which enter the unlearning params",
    f"{TWINS}::TOGETHER": "every method's twin; each method's key takes its own entry",
}


@dataclass(frozen=True)
class Version:
    """One explicit version: where it is written, and what the rules whose params hold it
    run (entries: "path" for a whole module, "path::name" for one top-level name)."""

    key: str
    file: str  # where the version is written
    name: str  # the constant, or "version" of the method's MethodSpec
    entries: tuple[str, ...]
    method: str | None = None  # a built-in method: its name in the registry

    def where(self) -> str:
        if self.method:
            return f"`version` of {self.method} in {self.file}"
        return f"`{self.name}` in {self.file}"


# Each stage's version, the rules whose params hold it (rules/functions/*.smk) and their
# scripts. Methods are added from the registry by `versions()`.
STAGES = (
    # train_originals, train_oracles (train_models.py), train_subset_models: training params.
    Version(
        "training",
        "klomflow/versions.py",
        "TRAINING",
        (f"{SCRIPTS}/train_models.py", f"{SCRIPTS}/train_subset_models.py"),
    ),
    # derive_forget_set: derived_forget_set_params.
    Version(
        "forget_sets", "klomflow/versions.py", "FORGET_SETS", (f"{SCRIPTS}/derive_forget_set.py",)
    ),
    # compute_privacy, compute_privacy_reference: privacy_params.
    Version("privacy", "klomflow/versions.py", "PRIVACY", (f"{SCRIPTS}/compute_privacy.py",)),
    # compute_klom, compute_noise_floor: klom_params.
    Version("klom", "klomflow/metrics/klom.py", "VERSION", (f"{SCRIPTS}/compute_klom.py",)),
    # resample_klom, resample_noise_floor: interval_params (which hold klom's version too).
    Version(
        "paper", "klomflow/reporting/selection.py", "VERSION", (f"{SCRIPTS}/resample_klom.py",)
    ),
    # fit_datamodels, fit_margin_datamodel: datamodel_fit_params; compute_datamodel_rows:
    # datamodel_rows_params.
    Version(
        "datamodels",
        "klomflow/training/datamodels.py",
        "VERSION",
        (
            f"{SCRIPTS}/fit_datamodels.py",
            f"{SCRIPTS}/fit_margin_datamodel.py",
            f"{SCRIPTS}/compute_datamodel_rows.py",
        ),
    ),
)


class GuardError(Exception):
    """The guard cannot read the code it must cover (a name it cannot find, a bad table)."""


def _literal(node, where: str):
    try:
        return ast.literal_eval(node)
    except ValueError as error:
        raise GuardError(f"{where}: not a literal") from error


def method_versions(root: Path = REPO) -> dict[str, str]:
    """Every built-in method's version, read from the registry's `SPECS` without importing."""
    tree = ast.parse((root / REGISTRY).read_text())
    default = None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "MethodSpec":
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign) and statement.target.id == "version":
                    default = _literal(statement.value, f"{REGISTRY}: MethodSpec.version")
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "MethodSpec":
            name = _literal(node.args[0], f"{REGISTRY}: a MethodSpec's name")
            keywords = {keyword.arg: keyword.value for keyword in node.keywords}
            found[name] = (
                _literal(keywords["version"], f"{REGISTRY}: {name}'s version")
                if "version" in keywords
                else default
            )
    if default is None or not found:
        raise GuardError(f"{REGISTRY}: no MethodSpec entries or no default version")
    return found


def twin_entries(root: Path = REPO) -> dict[str, ast.expr]:
    """Each method's entry (version, twin function) in the twins' TOGETHER table."""
    for node in ast.parse((root / TWINS).read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "TOGETHER":
            return {
                _literal(key, f"{TWINS}: TOGETHER"): value
                for key, value in zip(node.value.keys, node.value.values)
            }
    raise GuardError(f"{TWINS}: no TOGETHER table")


def versions(root: Path = REPO) -> list[Version]:
    """Every explicit version: the stages', then each built-in method's (its module, its
    ensemble twin where it has one, and the unlearning job that runs it)."""
    root = Path(root).resolve()
    twins = twin_entries(root)
    imported = _module(root, root / TWINS).imports
    found = list(STAGES)
    for method in method_versions(root):
        entries = [f"klomflow/unlearning/methods/{method}.py", f"{SCRIPTS}/unlearn.py"]
        if method in twins:
            function = twins[method].elts[1].id
            module, _ = imported[function][1]
            twin_file = _module_file(root, module).relative_to(root).as_posix()
            entries += [f"{twin_file}::{function}", f"{TWINS}::TOGETHER[{method!r}]"]
        found.append(Version(f"method:{method}", REGISTRY, "version", tuple(entries), method))
    return found


def read_version(root: Path, version: Version) -> str:
    if version.method:
        return method_versions(root)[version.method]
    for node in ast.parse((root / version.file).read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == version.name:
            return _literal(node.value, f"{version.file}: {version.name}")
    raise GuardError(f"{version.file}: no `{version.name} = ...` for {version.key}")


# The code a module holds, by top-level name.


@dataclass
class _Module:
    path: Path
    package: str | None
    bindings: dict = field(default_factory=dict)  # name -> [statements that bind it]
    imports: dict = field(default_factory=dict)  # name -> (statement, (module, attr|None))
    always: list = field(default_factory=list)  # statements that run on import, bind no name
    has_getattr: bool = False


# Module files and parsed modules, for one reading of a tree (cleared by `current`).
_CACHE: dict = {}


def _module_file(root: Path, dotted: str) -> Path | None:
    """The file of module `dotted`: under `root` (klomflow) or the scripts' folder."""
    if ("file", root, dotted) not in _CACHE:
        _CACHE["file", root, dotted] = _find_module_file(root, dotted)
    return _CACHE["file", root, dotted]


def _find_module_file(root: Path, dotted: str) -> Path | None:
    for base in (root, root / SCRIPTS):
        path = base.joinpath(*dotted.split("."))
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
    return None


def _import_targets(root: Path, node, package) -> dict:
    """name bound -> (module, attribute or None when the name is the module itself)."""
    targets = {}
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                targets[alias.asname] = (alias.name, None)
            else:
                targets[alias.name.split(".")[0]] = (alias.name.split(".")[0], None)
    else:
        module = from_module(node, package) or ""
        if module == "__future__":
            return {}
        for alias in node.names:
            if alias.name == "*":
                raise GuardError(f"`from {module} import *`: the guard cannot follow it")
            if _module_file(root, f"{module}.{alias.name}") is not None:
                targets[alias.asname or alias.name] = (f"{module}.{alias.name}", None)
            else:
                targets[alias.asname or alias.name] = (module, alias.name)
    return targets


def _bound_names(statement) -> list[str] | None:
    """The names an assignment binds; None when it binds something other than names."""
    targets = {
        ast.Assign: lambda s: s.targets,
        ast.AnnAssign: lambda s: [s.target],
        ast.AugAssign: lambda s: [s.target],
    }[type(statement)](statement)
    names = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.append(node.id)
            elif isinstance(node, (ast.Attribute, ast.Subscript, ast.Starred)):
                return None
    return names


def _module(root: Path, path: Path) -> _Module:
    if ("module", path) in _CACHE:
        return _CACHE["module", path]
    text = path.read_text()
    relative = path.relative_to(root) if path.is_relative_to(root / "klomflow") else None
    package = ".".join(relative.parent.parts) if relative else None
    module = _Module(path, package)
    for statement in ast.parse(text, str(path)).body:
        if (
            isinstance(statement, ast.Expr)
            and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)
        ):
            continue  # a docstring
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            for name, target in _import_targets(root, statement, package).items():
                module.imports[name] = (statement, target)
        elif isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            module.bindings.setdefault(statement.name, []).append(statement)
            module.has_getattr |= statement.name == "__getattr__"
        elif isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            names = _bound_names(statement)
            if names is None:
                module.always.append(statement)
            elif not set(names) <= set(VERSION_NAMES):
                for name in names:
                    module.bindings.setdefault(name, []).append(statement)
        else:  # if/try/with/a call: runs on import; what it defines or imports is its
            module.always.append(statement)
            for node in ast.walk(statement):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for name, target in _import_targets(root, node, package).items():
                        module.imports[name] = (statement, target)
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    module.bindings.setdefault(node.name, []).append(statement)
                elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    module.bindings.setdefault(node.id, []).append(statement)
    _CACHE["module", path] = module
    return module


def _uses(node: ast.AST):
    """What `node` uses: every longest `name.attribute...` chain (the id of its root name,
    [name, attributes]), every name (its id, the name), the imports inside it."""
    children = list(ast.walk(node))
    inner = {id(child.value) for child in children if isinstance(child, ast.Attribute)}
    chains = []
    for child in children:
        if isinstance(child, ast.Attribute) and id(child) not in inner:
            parts, current = [], child
            while isinstance(current, ast.Attribute):
                parts.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name):
                chains.append((id(current), [current.id, *reversed(parts)]))
    names = [(id(child), child.id) for child in children if isinstance(child, ast.Name)]
    imports = [
        child
        for child in children
        if isinstance(child, (ast.Import, ast.ImportFrom)) and child is not node
    ]
    return chains, names, imports


def _code(node: ast.AST, path: Path) -> str:
    """The code of one statement (docstrings and comments left out), computed once."""
    if not hasattr(node, "guard_code"):
        node.guard_code = code_of(ast.unparse(node), str(path))
    return node.guard_code


# What a version's entries reach: {file: [statements]}.

_ALL = "*"
_ON_IMPORT = "<on import>"


class _Reach:
    """Follows top-level names from the entries: a name's statements, the names they use, in
    their module or through its imports, down to the one attribute of a module they use."""

    def __init__(self, root: Path):
        self.root = root
        self.code: dict[Path, dict[int, ast.AST]] = {}  # file -> {id: statement}
        self.done: set[tuple[Path, str]] = set()
        self.queue: list[tuple[Path, str]] = []

    def _stopped(self, path: Path, name: str) -> bool:
        relative = path.relative_to(self.root).as_posix()
        return relative in NOT_FOLLOWED or f"{relative}::{name}" in NOT_FOLLOWED

    def add(self, path: Path, name: str, entry: bool = False) -> None:
        if (path, name) not in self.done and (entry or not self._stopped(path, name)):
            self.done.add((path, name))
            self.queue.append((path, name))

    def add_module(self, dotted: str, attribute: str | None) -> None:
        """Module `dotted`, all of it or one name (nothing unless it is the project's)."""
        path = _module_file(self.root, dotted)
        if path is None:
            return
        if attribute is not None and _module_file(self.root, f"{dotted}.{attribute}"):
            self.add_module(f"{dotted}.{attribute}", None)
        else:
            self.add(path, attribute or _ALL)

    def run(self) -> dict[Path, list[ast.AST]]:
        while self.queue:
            self._visit(*self.queue.pop())
        return {path: list(nodes.values()) for path, nodes in self.code.items()}

    def _hash_only(self, path: Path, statement: ast.AST) -> None:
        self.code.setdefault(path, {})[id(statement)] = statement

    def _keep(self, path: Path, statement: ast.AST) -> None:
        self._hash_only(path, statement)
        self._follow(path, statement)

    def _visit(self, path: Path, name: str) -> None:
        module = _module(self.root, path)
        if name == _ON_IMPORT:
            for statement in module.always:
                self._keep(path, statement)
            return
        # Importing a module runs its packages' __init__ files and its own top level.
        self.add(path, _ON_IMPORT)
        folder = path.parent
        while folder.is_relative_to(self.root / "klomflow"):
            if (folder / "__init__.py").is_file():
                self.add(folder / "__init__.py", _ON_IMPORT)
            folder = folder.parent
        if name == _ALL:  # every definition; of the imports, those the code uses
            for bound in module.bindings:
                self.add(path, bound)
            for statement, _ in module.imports.values():
                self._hash_only(path, statement)
        elif name in module.bindings:
            for statement in module.bindings[name]:
                self._keep(path, statement)
        elif name in module.imports:  # asked for by a bare use, or from another module
            statement, (dotted, attribute) = module.imports[name]
            self._hash_only(path, statement)
            self.add_module(dotted, attribute)
        elif module.has_getattr:  # a name made on request (PEP 562)
            self.add(path, "__getattr__")
        elif name not in VERSION_NAMES:
            raise GuardError(f"{path.relative_to(self.root)}: no top-level `{name}` to follow")

    def _follow(self, path: Path, node: ast.AST) -> None:
        """The names `node` uses: its module's top-level names and what they import; module
        attributes (`loop.autocast`) down to the one name; imports inside functions."""
        module = _module(self.root, path)
        if not hasattr(node, "guard_uses"):
            node.guard_uses = _uses(node)
        chains, names, imports = node.guard_uses
        chain_roots = set()
        for root_name, chain in chains:
            statement, (dotted, attribute) = module.imports.get(chain[0], (None, (None, "")))
            if attribute is None and _module_file(self.root, dotted) is not None:
                chain_roots.add(root_name)
                self._hash_only(path, statement)
                self._follow_chain(dotted, chain[1:])
        for child in imports:
            for dotted, attribute in _import_targets(self.root, child, module.package).values():
                self.add_module(dotted, attribute)
        for name_id, name in names:
            if name_id not in chain_roots and (name in module.bindings or name in module.imports):
                self.add(path, name)

    def _follow_chain(self, dotted: str, attributes: list[str]) -> None:
        for attribute in attributes:
            if _module_file(self.root, f"{dotted}.{attribute}") is None:
                self.add_module(dotted, attribute)
                return
            dotted = f"{dotted}.{attribute}"
        self.add_module(dotted, None)


def reached(root: Path, version: Version) -> dict[str, str]:
    """{file: fingerprint of the code in it that `version`'s entries reach}, sorted."""
    root = Path(root).resolve()
    reach = _Reach(root)
    extra = {}
    for entry in version.entries:
        relative, _, name = entry.partition("::")
        if not (root / relative).is_file():
            raise GuardError(f"{version.key}: {relative} does not exist (versions_guard.py)")
        if name.startswith("TOGETHER["):  # one method's entry in the twins' table
            method = name[len("TOGETHER['") : -2]
            extra[relative] = ast.dump(twin_entries(root)[method], include_attributes=False)
        else:  # an entry is taken even where NOT_FOLLOWED stops what reaches it
            reach.add(root / relative, name or _ALL, entry=True)
    files = {}
    for path, nodes in reach.run().items():
        nodes = sorted(nodes, key=lambda node: (node.lineno, node.col_offset))
        code = "\n".join(_code(node, path) for node in nodes)
        if code:
            files[path.relative_to(root).as_posix()] = code
    for relative, code in extra.items():
        files[relative] = files.get(relative, "") + "\n" + code
    return {
        relative: hashlib.sha256(code.encode()).hexdigest()[:16]
        for relative, code in sorted(files.items())
    }


def current(root: Path = REPO) -> dict[str, dict]:
    """{key: {"version": ..., "files": {file: fingerprint}}} for the code under `root`."""
    root = Path(root).resolve()
    _CACHE.clear()
    return {
        version.key: {"version": read_version(root, version), "files": reached(root, version)}
        for version in versions(root)
    }


def check(root: Path = REPO, lock: dict | None = None) -> list[str]:
    """What the lock and the code under `root` disagree on: one message per version key."""
    lock = json.loads(LOCK.read_text()) if lock is None else lock
    now = current(root)
    where = {version.key: version for version in versions(root)}
    problems = []
    for key in sorted(set(now) | set(lock)):
        record = f"{RECORD} {key}"
        if key not in lock:
            problems.append(
                f"{key}: a version the lock ({LOCK.name}) does not hold; record it: {record}"
            )
            continue
        if key not in now:
            problems.append(
                f"{key}: in the lock but no longer a version; record to drop it: {record}"
            )
            continue
        was, is_ = lock[key], now[key]
        if was["version"] != is_["version"]:
            problems.append(
                f"{key}: its version moved from {was['version']!r} to "
                f"{is_['version']!r}; record the new state: {record}"
            )
        elif was["files"] != is_["files"]:
            changed = sorted(
                file
                for file in set(was["files"]) | set(is_["files"])
                if was["files"].get(file) != is_["files"].get(file)
            )
            problems.append(
                f"{key}: its code changed ({', '.join(changed)}) while its version did not.\n"
                f"  - if the change can alter its outputs: bump {where[key].where()} "
                f"(now {is_['version']!r}), then {record}\n"
                f"  - if it leaves them as they were (a refactor, or a change that another "
                f"version its rules' params hold covers): {record}"
            )
    return problems


def record(keys, root: Path = REPO, lock_path: Path = LOCK) -> dict:
    """Rewrite the lock's entries for `keys` (all when None) from the code under `root`."""
    lock = json.loads(lock_path.read_text()) if lock_path.is_file() else {}
    now = current(root)
    for key in now if keys is None else keys:
        if key in now:
            lock[key] = now[key]
        elif key in lock:
            del lock[key]
        else:
            raise GuardError(f"{key}: no such version; known: {sorted(now)}")
    lock = dict(sorted(lock.items()))
    lock_path.write_text(json.dumps(lock, indent=1) + "\n")
    return lock


def _table(root: Path = REPO) -> str:
    _CACHE.clear()
    lines = []
    for version in versions(root):
        files = reached(root, version)
        lines.append(
            f"{version.key} = {read_version(root, version)!r} "
            f"({version.where()}): {', '.join(files)}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(_table())
        return 0
    if argv[0] == "check":
        problems = check()
        print("\n".join(problems) or "the lock matches the code")
        return 1 if problems else 0
    if argv[0] == "record" and len(argv) > 1:
        keys = None if argv[1:] == ["--all"] else argv[1:]
        record(keys)
        print(f"recorded {'every key' if keys is None else ', '.join(keys)} in {LOCK}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
