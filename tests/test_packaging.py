"""Packaging: the runtime stands without the demo extra, and the lock files satisfy
pyproject.toml's ranges (``make install`` and ``make demo`` install the locks)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from beats.cli import DEMO_EXTRA, RUN

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# modules of the emulators and simulators (the demo extra), and the entry point (it runs)
_DEMO_MODULES = ("emulator", "simulator", "scenario", "demo", "__main__")

_BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
"""


def _without_demo_extra(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python *args`` in an interpreter where the demo extra's packages cannot be imported."""
    (tmp_path / "sitecustomize.py").write_text(_BLOCKER.format(blocked=sorted(DEMO_EXTRA)))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def _runtime_modules() -> list[str]:
    modules = []
    for package in ("common", "gateway", "beats"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if any(part in _DEMO_MODULES for part in parts):
                continue
            modules.append(".".join(p for p in parts if p != "__init__"))
    return modules


def test_every_runtime_module_imports_without_the_demo_extra(tmp_path: Path) -> None:
    modules = _runtime_modules()
    assert "beats.opencti.normalize" in modules and "gateway.service" in modules
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
    result = _without_demo_extra(tmp_path, "-c", code)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("name", sorted(RUN))
def test_each_service_starts_its_cli_without_the_demo_extra(tmp_path: Path, name: str) -> None:
    result = _without_demo_extra(tmp_path, "-m", "beats", "run", name, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--log-level" in result.stdout


def test_an_emulator_without_the_demo_extra_says_what_to_install(tmp_path: Path) -> None:
    result = _without_demo_extra(tmp_path, "-m", "beats", "emulate", "mqtt", "--help")
    assert result.returncode != 0
    assert "pip install 'works-beats[demo]'" in result.stderr
    assert "Traceback" not in result.stderr


def _locked(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            pinned = Requirement(line)
            pins[canonicalize_name(pinned.name)] = str(pinned.specifier).removeprefix("==")
    return pins


def _requirements(*extras: str) -> list[Requirement]:
    listed = list(PYPROJECT["dependencies"])
    for extra in extras:
        listed += PYPROJECT["optional-dependencies"][extra]
    return [r for r in map(Requirement, listed) if canonicalize_name(r.name) != "works-beats"]


@pytest.mark.parametrize(
    ("lock", "extras"), [("dev.txt", ("demo", "dev")), ("demo.txt", ("demo",))]
)
def test_each_lock_satisfies_the_declared_ranges(lock: str, extras: tuple[str, ...]) -> None:
    pins = _locked(lock)
    for requirement in _requirements(*extras):
        version = pins.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not in requirements/{lock}"
        assert requirement.specifier.contains(version), f"{lock}: {requirement} vs {version}"


def test_the_demo_lock_holds_no_developer_tool_and_agrees_with_the_dev_lock() -> None:
    demo, dev = _locked("demo.txt"), _locked("dev.txt")
    assert not {"pytest", "pyspark", "selenium", "mypy", "scikit-learn"} & set(demo)
    assert {name: dev.get(name) for name in demo} == demo


def test_exact_pins_are_only_where_the_code_reaches_into_internals() -> None:
    exact = {r.name for r in _requirements() if str(r.specifier).startswith("==")}
    assert exact == {
        "uvicorn", "h11", "sse-starlette", "aiokafka", "httpx-sse", "pydantic-settings"
    }  # fmt: skip
