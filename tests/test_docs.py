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
