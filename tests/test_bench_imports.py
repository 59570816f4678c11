"""Every benchmark still imports: they run by hand, not in CI, so a rename in streamd/ would otherwise
break one unnoticed (bench/capacity.py imported a constant that had moved, found only when run)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__init__")


def test_there_are_benchmarks() -> None:
    assert {"capacity", "cluster", "pipeline"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_a_benchmark_imports_and_has_a_main(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    if "__main__" in (BENCH / f"{name}.py").read_text():  # the rest are parts of other benchmarks
        assert callable(getattr(module, "main", None)), f"bench/{name}.py has no main()"
