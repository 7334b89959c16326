"""constraints.txt (the exact versions the suite last passed with) and pyproject.toml's declared ranges agree:
every pinned package that charlstm declares lies inside its range, and every runtime dependency is pinned."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = [Requirement(r) for r in project["dependencies"]]
    extras = [Requirement(r) for reqs in project["optional-dependencies"].values() for r in reqs]
    return core, extras


def test_every_runtime_dependency_is_pinned():
    pins = _pins()
    core, _ = _declared()
    missing = [r.name for r in core if canonicalize_name(r.name) not in pins]
    assert not missing, f"constraints.txt lacks {missing}: regenerate it (README, Development)"


def test_pins_lie_inside_the_declared_ranges():
    pins = _pins()
    core, extras = _declared()
    outside = [
        f"{r.name}=={pins[canonicalize_name(r.name)]} not in {r.specifier}"
        for r in core + extras
        if canonicalize_name(r.name) in pins and not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)
    ]
    assert not outside, outside


def test_major_libraries_have_upper_bounds():
    core, extras = _declared()
    for r in core + extras:
        if canonicalize_name(r.name) in {"keras", "tensorflow", "jax", "numpy", "fastapi", "torch"}:
            assert any(s.operator in ("<", "<=", "~=") for s in r.specifier), f"{r}: no upper bound"


def _readme_commands() -> list[str]:
    """The README's opening bash block (install + demo; tests), each line without its trailing comment."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("   #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_install_lines_use_constraints():
    commands = _readme_commands()
    installs = [part for line in commands for part in line.split("&&") if "pip install" in part]
    assert len(installs) == 2, commands  # the default install, then the dev extras
    for part in installs:
        assert "-c constraints.txt" in part, f"README: {part.strip()!r} does not install through constraints.txt"


def test_ci_runs_the_readme_lines_verbatim():
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    for command in _readme_commands():
        assert command in ci, f".ci/run does not run the README's line {command!r}"


def test_the_base_install_is_keras_and_torch_and_the_extras_name_the_others():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert {"keras", "torch"} <= core and not core & {"tensorflow", "jax", "jaxlib"}
    extras = project["optional-dependencies"]
    for extra, package in (("tensorflow", "tensorflow"), ("jax", "jax")):
        assert package in {canonicalize_name(Requirement(r).name) for r in extras[extra]}
    dev = {canonicalize_name(Requirement(r).name) for r in extras["dev"]}
    assert {"tensorflow", "jax"} <= dev  # the suite tests every backend
