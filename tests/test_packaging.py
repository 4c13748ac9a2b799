"""Packaging: the package declares version ranges; exact pins live in the constraints file for CI."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dependencies_are_ranges_and_ci_pins_them() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in dependencies if "==" in d], "pin exact versions in scripts/constraints.txt instead"
    torch = next(d for d in dependencies if d.startswith("torch"))
    assert ">=" in torch and "<" in torch
    pins = (ROOT / "scripts" / "constraints.txt").read_text().splitlines()
    assert any(line.startswith("torch==") for line in pins)
    assert "-c scripts/constraints.txt" in (ROOT / "scripts" / "test.sh").read_text()
