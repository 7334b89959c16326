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
