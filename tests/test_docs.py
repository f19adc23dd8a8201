"""The README's worked example of a tool provider is the package the test suite installs and serves, verbatim."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.servers import ROOT

PACKAGE = ROOT / "tests" / "provider_package"


@pytest.mark.parametrize(
    ("language", "file"),
    [("toml", PACKAGE / "pyproject.toml"), ("python", PACKAGE / "notes_mcp" / "__init__.py")],
    ids=["pyproject", "module"],
)
def test_the_readme_shows_the_tested_provider_package(language: str, file: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"```{language}\n{file.read_text()}```\n" in readme


def test_the_tour_names_every_module_of_the_app() -> None:
    """README "How it is built": a newcomer finds every file of app/ in it, under its package."""
    readme = (ROOT / "README.md").read_text()
    tour = readme[readme.index("## How it is built") :]
    tour = tour[: tour.index("```", tour.index("```") + 3)]
    missing = []
    for module in sorted((ROOT / "app").rglob("*.py")):
        relative = module.relative_to(ROOT / "app")
        if module.stem == "__init__" and relative.parent.parts:
            name = f"{relative.parent.name}/"
        else:
            name = module.name if relative.parent == Path(".") or module.stem == "__init__" else module.stem
        if name not in tour:
            missing.append(str(relative))
    assert missing == []
