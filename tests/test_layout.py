"""The layout as a lint: nothing outside a runtime's or a space's own module branches on its name,
and the bottom layer (device_tables) knows no space and imports no layer above it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from hwlat.nas.spaces import spaces
from hwlat.profilers.runtimes import runtimes

ROOT = Path(__file__).resolve().parent.parent
REGISTRIES = {Path("hwlat/profilers/runtimes.py"), Path("hwlat/nas/spaces/__init__.py")}


def owners() -> dict[str, Path]:
    """Plugin name -> where it may be named: a runtime's sub-package of hwlat/profilers/, a space's module."""
    out = {}
    for name, cls in runtimes().items():
        path = Path(inspect.getfile(cls)).resolve().relative_to(ROOT)
        out[name] = path.parent if path.parent != Path("hwlat/profilers") else path
    for name, cls in spaces().items():
        out[name] = Path(inspect.getfile(cls)).resolve().relative_to(ROOT)
    return out


def named(node: ast.AST, names: set[str]) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in names}


def branches(tree: ast.AST, names: set[str]):
    """(line, names) of comparisons, dict keys and match cases that use a plugin's name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            found = named(node, names)
        elif isinstance(node, ast.Dict):
            found = {k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in names}
        elif isinstance(node, ast.match_case):
            found = named(node.pattern, names)
        else:
            continue
        if found:
            yield node.lineno, found


def test_no_plugin_name_is_compared_outside_its_plugin():
    where = owners()
    names = set(where)
    bad = []
    for path in sorted((ROOT / "hwlat").rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel in REGISTRIES:
            continue
        for line, found in branches(ast.parse(path.read_text(), str(rel)), names):
            foreign = [n for n in found if not (rel == where[n] or where[n] in rel.parents)]
            if foreign:
                bad.append(f"{rel}:{line}: {', '.join(sorted(foreign))}")
    assert not bad, "branches on a runtime's or space's name outside its plugin:\n" + "\n".join(bad)


def test_device_tables_knows_no_space():
    names = set(spaces())
    bad = []
    for path in sorted((ROOT / "hwlat" / "device_tables").rglob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings:
                bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if module and module.split(".")[0] == "hwlat" and module.split(".")[:2] != ["hwlat", "device_tables"]:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: imports {module}")
    assert not bad, "device_tables names a space, or imports a layer above it:\n" + "\n".join(bad)


def test_type_checkers_see_the_api():
    """`import hwlat` imports its API on first use (a module __getattr__), so a type checker saw every
    `hwlat.predict` as Any, and the types the API takes and returns live in packages without py.typed:
    py.typed promised types that never reached a user's mypy."""
    import hwlat

    init = ast.parse((ROOT / "hwlat" / "__init__.py").read_text())
    checked = {alias.asname or alias.name for node in ast.walk(init) if isinstance(node, ast.If)
               and getattr(node.test, "id", "") == "TYPE_CHECKING"
               for imp in node.body if isinstance(imp, ast.ImportFrom) for alias in imp.names}
    assert checked == set(hwlat.__all__) - {"__version__"}
    import tomllib

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package in ("hwlat", "hwlat.device_tables", "hwlat.nas", "hwlat.predictors", "hwlat.profilers"):
        assert (ROOT / package.replace(".", "/") / "py.typed").is_file() and "py.typed" in package_data[package], package


def test_every_api_function_states_what_it_returns():
    """profile_device, profile_model and profile_fusion returned an unannotated Any to type checkers;
    `from hwlat.api import *` left drift out."""
    import hwlat
    import hwlat.api

    assert sorted(hwlat.api.__all__) == sorted(set(hwlat.__all__) - {"__version__", "HwlatError", "plugins"})
    for name in hwlat.api.__all__:
        f = getattr(hwlat.api, name)
        assert isinstance(f, type) or inspect.signature(f).return_annotation is not inspect.Signature.empty, name


# `hwlat.`-names that are no modules: file formats and the plugins' entry-point groups
NOT_MODULES = {"hwlat.arch_table", "hwlat.device_table", "hwlat.predictor", "hwlat.kernel_regressors",
               "hwlat.runtimes", "hwlat.spaces"}


def resolves(name: str) -> bool:
    """Whether a dotted name is a module of hwlat, or an attribute of one."""
    import importlib
    import importlib.util

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            found = importlib.util.find_spec(".".join(parts[:i])) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            obj = importlib.import_module(".".join(parts[:i]))
            for attr in parts[i:]:
                if not hasattr(obj, attr):
                    return False
                obj = getattr(obj, attr)
            return True
    return False


def test_every_hwlat_name_the_code_and_docs_give_exists():
    """After nas, profilers, predictors and device_tables moved under hwlat/, a cluster error told the user
    to 'call hwlat.profilers.cluster.connect(address) first', which lives in hwlat.profilers.cluster.driver."""
    import re

    bad = []
    files = [*(ROOT / "hwlat").rglob("*.py"), *(ROOT / "hwlat").rglob("*.md"), *(ROOT / "docs").rglob("*.md"),
             *(ROOT / "examples").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"), ROOT / "README.md"]
    for path in sorted(files):
        text = path.read_text()
        for m in re.finditer(r"(?<![\w./-])hwlat(?:\.[A-Za-z_]\w*)+", text):
            if m.group() not in NOT_MODULES and not resolves(m.group()):
                bad.append(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}")
    assert not bad, "names of hwlat modules or objects that do not exist:\n" + "\n".join(bad)
