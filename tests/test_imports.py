"""The core is sans-IO: no module under smtpcore/ may import anything that does I/O.

The check reads every module's import statements with ``ast`` (top level, inside
functions, inside ``if``/``try``), so a lazy ``import socket`` in a function is
caught as surely as one at the top.  It also refuses the ways around an import
statement (``importlib``, ``__import__``).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import smtpcore

PACKAGE = Path(smtpcore.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))

FORBIDDEN = frozenset(
    {
        "socket",
        "ssl",
        "asyncio",
        "trio",
        "gevent",
        "threading",
        "_thread",
        "select",
        "selectors",
        "time",
        "subprocess",
        "anyio",
        "multiprocessing",
        "concurrent",
        "importlib",
        # The adapters do I/O by definition; the core never reaches up into them.
        "adapters",
    }
)

# ``python -m smtpcore`` runs the command line, which lives in ``adapters.cli``
# because it opens sockets.  That file is only ever run as a script: no module of
# the package imports it (checked below), so importing smtpcore stays I/O-free.
SCRIPT_ONLY = frozenset({"__main__.py"})


def imported_modules(source: str) -> list[tuple[int, str]]:
    """Every absolute module an import statement in ``source`` names, with its line.

    ``import a.b`` gives ``a.b``; ``from a.b import c`` gives ``a.b``; relative
    imports (``from . import x``, ``from ._y import z``) stay inside the package
    and are left out.  A call to ``__import__`` is reported as ``__import__``.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module is not None:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "__import__":
            found.append((node.lineno, "__import__"))
    return found


def forbidden_in(source: str) -> list[str]:
    bad = []
    for line, module in imported_modules(source):
        top = module.split(".")[0]
        if top in FORBIDDEN or module == "__import__":
            bad.append(f"line {line}: {module}")
    return bad


def test_there_are_modules_to_check() -> None:
    names = {path.name for path in MODULES}
    # The checker must be looking at the real package, not an empty directory.
    assert {"__init__.py", "_receivebuffer.py", "_data.py", "_events.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_does_no_io(path: Path) -> None:
    if path.name in SCRIPT_ONLY:
        pytest.skip("run as a script only, never imported by the package")
    assert forbidden_in(path.read_text(encoding="utf-8")) == []


def test_nothing_imports_the_script() -> None:
    for path in MODULES:
        for _, module in imported_modules(path.read_text(encoding="utf-8")):
            assert module not in ("smtpcore.__main__", "__main__"), path.name
        assert "__main__" not in [
            alias.name
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        ], path.name


@pytest.mark.parametrize(
    "source",
    [
        "import socket",
        "import ssl as _ssl",
        "import os, time",
        "import asyncio.events",
        "from concurrent.futures import ThreadPoolExecutor",
        "from trio import open_tcp_stream",
        "from gevent import monkey",
        "from adapters.cli import main",
        "import selectors",
        "from select import select",
        "import subprocess",
        "import anyio",
        "import multiprocessing.pool",
        "from threading import Lock",
        "def f():\n    import socket\n    return socket",
        "class C:\n    def m(self):\n        from time import monotonic\n",
        "try:\n    import trio\nexcept ImportError:\n    pass",
        "if True:\n    from asyncio import sleep",
        "import importlib\nimportlib.import_module('socket')",
        "s = __import__('socket')",
    ],
)
def test_checker_catches(source: str) -> None:
    assert forbidden_in(source) != []


@pytest.mark.parametrize(
    "source",
    [
        "from . import _abnf",
        "from ._errors import LocalProtocolError",
        "from .. import something",
        "import re, ipaddress, hmac, base64",
        "from dataclasses import dataclass",
        "import timeit_is_not_time",
        "from typing import TYPE_CHECKING",
    ],
)
def test_checker_allows(source: str) -> None:
    assert forbidden_in(source) == []


def test_every_public_name_exists() -> None:
    assert len(smtpcore.__all__) == len(set(smtpcore.__all__))
    for name in smtpcore.__all__:
        assert hasattr(smtpcore, name), name


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from smtpcore import *", namespace)
    assert set(smtpcore.__all__) <= set(namespace)


def test_private_modules_all_names_exist() -> None:
    # Each private module's own __all__ must not promise names it lacks.
    for path in MODULES:
        if path.name.startswith("__") or path.parent != PACKAGE:
            continue  # __init__ is checked above; __main__ would run the command line
        module = importlib.import_module(f"smtpcore.{path.stem}")
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{path.name}: {name}"


def test_py_typed_ships() -> None:
    assert (PACKAGE / "py.typed").is_file()
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8")
    # The marker is only useful if the build includes it.
    assert "py.typed" in pyproject
