"""The core knows nothing of the example tools: they are a provider like any other, in their own package."""

from __future__ import annotations

import subprocess

from tests.support.servers import ROOT

CORE = ["app", "wsgi.py", "gunicorn.conf.py"]


def grep(*args: str) -> subprocess.CompletedProcess[str]:
    command = ["grep", "--recursive", "--line-number", "--binary-files=without-match", "--exclude-dir=__pycache__"]
    return subprocess.run([*command, *args, *CORE], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_no_todo_word_is_left_in_the_core() -> None:
    done = grep("--ignore-case", "todo")
    assert (done.returncode, done.stdout, done.stderr) == (1, "", "")


def test_the_examples_are_named_only_as_the_default_provider() -> None:
    done = grep("flask_mcp_examples")
    assert done.returncode == 0, done.stderr
    assert {line.split(":", 1)[0] for line in done.stdout.splitlines()} == {"app/tool_providers.py"}
    assert 'EXAMPLES = "flask_mcp_examples:register"' in done.stdout
