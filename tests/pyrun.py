"""Run a snippet in a fresh interpreter: for what must be observed from outside (imports, caches, RSS)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


NOT_INSTALLED = """
import sys

blocked = set(sys.argv[1].split(","))


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
for loaded in [m for m in sys.modules if m.partition(".")[0] in blocked]:
    del sys.modules[loaded]
from edge_gru.cli import main

main(sys.argv[2:], prog_name="edge-gru")
"""


def run_cli_without(
    blocked: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``edge-gru ARGS`` in a fresh interpreter whose imports of ``blocked`` (comma list of top-level
    modules) fail as on an install that lacks them: a meta-path finder raises ``ModuleNotFoundError``."""
    return subprocess.run(
        [sys.executable, "-c", NOT_INSTALLED, blocked, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
