"""Fingerprints of Python code: what reruns follow when a method's code changes.

A fingerprint hashes each module's syntax tree with its docstrings removed, never its
text: comments, blank lines, layout and docstrings leave it as it was, and any change to
what runs moves it. `local_imports` finds, without importing anything, the modules of one
folder tree that a module imports, directly or through each other, so that a fingerprint
covers a method's helpers without anyone listing them.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path


def _is_docstring(statement) -> bool:
    return (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str))


def code_of(source: str, filename: str = "<source>") -> str:
    """The code of a module: its syntax tree without docstrings, positions or comments."""
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.body and _is_docstring(node.body[0]):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _module_files(root: Path, dotted: str) -> list[Path]:
    """The files under `root` that importing `dotted` runs: each package's __init__.py on the
    way, then the module's own file (later parts are attributes); none when the first part
    is not under `root`."""
    files, folder = [], root
    for part in dotted.split("."):
        if (folder / part / "__init__.py").is_file():
            folder = folder / part
            files.append(folder / "__init__.py")
        elif (folder / f"{part}.py").is_file():
            files.append(folder / f"{part}.py")
            break
        else:
            break
    return files


def from_module(node: ast.ImportFrom, package: str | None) -> str | None:
    """The absolute name of the module a `from ... import` statement reads, its relative
    dots resolved against `package` (the importing module's package); None for a relative
    import outside any package."""
    if not node.level:
        return node.module or ""
    if package is None:
        return None
    parts = package.split(".")
    return ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))


def _imported_names(path: Path, package: str | None) -> list[str]:
    """Dotted names the module at `path` imports (for `from a import b`: a and a.b), with
    relative imports resolved against `package` (the module's own package, None at top)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = from_module(node, package)
            if base is None:
                continue  # a relative import outside a package fails when it runs
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return [name for name in names if name]


def _package_of(path: Path, root: Path) -> str | None:
    # A module's package is its folder, whether it is the package's __init__ or not.
    return ".".join(path.relative_to(root).parent.parts) or None


def local_imports(path, root, packages=None) -> list[Path]:
    """Every file under `root` that the module at `path` imports, directly or through the
    modules it reaches there (`root` is where its imports are looked up: the method file's
    folder, or the folder holding its top-level package). Sorted; `path` itself excluded.

    `packages`, when given, are the only top-level names followed: where `root` is shared
    with other distributions (site-packages), the method's own, not torch's thousand files.
    """
    path, root = Path(path).resolve(), Path(root).resolve()
    seen, queue = set(), [path]
    while queue:
        current = queue.pop()
        if current in seen:
            continue
        seen.add(current)
        inside = current.is_relative_to(root)
        package = _package_of(current, root) if inside else None
        for name in _imported_names(current, package):
            if packages is not None and name.split(".")[0] not in packages:
                continue
            for file in _module_files(root, name):
                if file.resolve() not in seen:
                    queue.append(file.resolve())
    return sorted(seen - {path})


def fingerprint(paths, root) -> str:
    """SHA-256 (16 hex digits) of the code of `paths`, each named relative to `root`."""
    digest = hashlib.sha256()
    root = Path(root).resolve()
    for file in sorted(Path(p).resolve() for p in paths):
        name = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
        digest.update(name.encode() + b"\0" + code_of(file.read_text(), str(file)).encode()
                      + b"\0")
    return digest.hexdigest()[:16]
