"""The type stubs describe the compiled module as it is, and every public name has a
docstring."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import dptrain
import dptrain.accounting as acc
from dptrain import _dptrain

STUB = Path(__file__).resolve().parents[1] / "dptrain" / "_dptrain.pyi"


def public(names: list[str]) -> set[str]:
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def test_the_stub_names_what_the_module_has() -> None:
    tree = ast.parse(STUB.read_text())
    top: set[str] = set()
    methods: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            top.add(node.target.id)
        if isinstance(node, ast.ClassDef):
            methods[node.name] = public(
                [n.name for n in node.body if isinstance(n, ast.FunctionDef)]
            )
    assert top == public(dir(_dptrain))
    for name, stubbed in methods.items():
        assert stubbed == public(dir(getattr(_dptrain, name))), name


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for module in (dptrain, acc, _dptrain):
        for name in getattr(module, "__all__", None) or public(dir(module)):
            item = getattr(module, name)
            if inspect.isroutine(item) or inspect.isclass(item) or inspect.ismodule(item):
                if not (item.__doc__ or "").strip():
                    missing.append(f"{module.__name__}.{name}")
                if inspect.isclass(item):
                    for attr in public(dir(item)):
                        member = getattr(item, attr)
                        if callable(member) or isinstance(member, property):
                            if not (getattr(member, "__doc__", "") or "").strip():
                                missing.append(f"{module.__name__}.{name}.{attr}")
    assert not missing, missing


def test_the_package_is_typed() -> None:
    assert (Path(dptrain.__file__).parent / "py.typed").is_file()


def test_the_docstring_examples_run() -> None:
    import doctest

    failed, attempted = doctest.testmod(acc, raise_on_error=False)
    assert attempted >= 1 and failed == 0
