"""The public surface of `s3tasks`: one list of names, the same in `__all__`, in the
`TYPE_CHECKING` imports and at run time, none of them shadowed by a submodule."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import s3tasks


def type_checking_imports() -> set[str]:
    tree = ast.parse(Path(s3tasks.__file__).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for stmt in node.body:
                names.update(alias.asname or alias.name for alias in stmt.names)
    return names


def test_all_type_checking_imports_and_lazy_exports_name_the_same_things():
    assert sorted(s3tasks.__all__) == sorted(s3tasks._EXPORTS)
    assert type_checking_imports() == set(s3tasks.__all__)


def test_every_public_name_resolves_from_the_module_it_is_declared_in():
    for name, module in s3tasks._EXPORTS.items():
        assert getattr(s3tasks, name) is getattr(importlib.import_module(module), name)


def test_no_public_name_is_also_a_submodule_so_nothing_changes_type():
    submodules = {m.name for m in pkgutil.iter_modules(s3tasks.__path__)}
    assert not submodules & set(s3tasks.__all__)
