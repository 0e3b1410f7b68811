"""deploy/install.sh into a temporary root, and the installed daemon under a real systemd notify socket.

install.sh runs once for the module (a real virtual environment with the device extras,
from the package index pip is configured with); the last tests reinstall and uninstall.
The installed daemon runs as an unprivileged user (nobody) against a root-owned
installation, as systemd's DynamicUser= and ProtectSystem=strict would run it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_gru.harness import Broker, NotifySocket, Publisher, Watcher
from tests.deploy_support import DEPLOY, ROOT, verify_problems

pytestmark = pytest.mark.timeout(600)

INSTALL = DEPLOY / "install.sh"
NOBODY = 65534


@dataclass
class Installed:
    root: Path
    output: str

    @property
    def opt(self) -> Path:
        return self.root / "opt" / "edge-gru"

    @property
    def exe(self) -> Path:
        return self.opt / "venv" / "bin" / "edge-gru"

    @property
    def python(self) -> Path:
        return self.opt / "venv" / "bin" / "python"

    @property
    def config(self) -> Path:
        return self.root / "etc" / "edge-gru" / "edge-gru.toml"

    @property
    def unit(self) -> Path:
        return self.root / "etc" / "systemd" / "system" / "edge-gru.service"

    @property
    def cache(self) -> Path:
        return self.root / "var" / "cache" / "edge-gru"

    @property
    def state(self) -> Path:
        return self.root / "var" / "lib" / "edge-gru"


def run_install(root: Path, *args: str, timeout: float = 540) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--prefix", str(root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",  # not the source tree: nothing may be imported from the checkout
    )


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    # Outside pytest's 0700 temp root, so that the unprivileged daemon can reach the install.
    base = Path(tempfile.mkdtemp(prefix="edge-gru-install-"))
    base.chmod(0o755)
    root = base / "root"
    out = run_install(root, "--from", str(ROOT))
    assert out.returncode == 0, out.stdout + out.stderr
    yield Installed(root, out.stdout + out.stderr)
    shutil.rmtree(base, ignore_errors=True)


def source_bundle_id() -> str:
    return str(json.loads((ROOT / "models" / "default" / "manifest.json").read_text())["id"])


def test_install_lays_out_the_files(installed: Installed) -> None:
    venv = installed.opt / "venv"
    assert venv.is_symlink() and os.readlink(venv).startswith("venvs/")
    assert [p.name for p in (installed.opt / "venvs").iterdir()] == [Path(os.readlink(venv)).name]
    assert os.access(installed.exe, os.X_OK)

    model = installed.opt / "models" / "default"
    assert json.loads((model / "manifest.json").read_text())["id"] == source_bundle_id()

    # The example config, pointed at this installation; every other setting as shipped.
    shipped = tomllib.loads((DEPLOY / "edge-gru.toml").read_text())
    config = tomllib.loads(installed.config.read_text())
    assert config["model"]["path"] == str(model)
    assert config["state"]["dir"] == str(installed.state)
    for section in shipped:
        for key, value in shipped[section].items():
            if (section, key) not in (("model", "path"), ("state", "dir")):
                assert config[section][key] == value, f"{section}.{key}"
    assert (installed.config.parent / "edge-gru.toml.example").read_text() == installed.config.read_text()

    # The unit, with its paths in the prefix.
    unit = installed.unit.read_text()
    assert f"ExecStart={installed.exe} serve --config {installed.config}\n" in unit
    assert f"Environment=NUMBA_CACHE_DIR={installed.cache}\n" in unit
    assert "StateDirectory=edge-gru\n" in unit  # systemd's own names stay relative

    # Kernels compiled ahead of time into the cache directory (not into the environment),
    # and they match this machine.
    assert list(installed.cache.glob("_edge_gru_kernels_*_host*.json")), sorted(installed.cache.iterdir())
    check = subprocess.run(
        [str(installed.exe), "build-kernels", "--check", "--json", "--out", str(installed.cache)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert any(m["usable"] for m in json.loads(check.stdout)["modules"])
    assert not list(installed.opt.glob("venvs/*/lib/python*/site-packages/edge_gru/__pycache__/*.nb?"))
    assert (installed.opt / "doc" / "mosquitto" / "edge-gru.acl").is_file()
    # systemctl is not called for a prefix, and the next steps are printed.
    assert "systemctl was not called" in installed.output
    assert f"{installed.exe} serve --config {installed.config} --check" in installed.output


def test_device_environment_has_no_tensorflow(installed: Installed) -> None:
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('tensorflow', 'keras', 'numba', 'paho', 'ai_edge_litert', 'edge_gru')}))"
    )
    out = subprocess.run([str(installed.python), "-I", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "tensorflow": False,
        "keras": False,
        "numba": True,
        "paho": True,
        "ai_edge_litert": True,
        "edge_gru": True,
    }
    pip = subprocess.run(
        [str(installed.python), "-m", "pip", "list", "--format=json"], capture_output=True, text=True, timeout=120
    )
    names = {p["name"].lower() for p in json.loads(pip.stdout)}
    assert not {n for n in names if n.startswith(("tensorflow", "tf-", "keras", "tb-nightly", "tensorboard"))}


def test_installed_unit_verifies_without_a_warning(installed: Installed) -> None:
    assert verify_problems(installed.unit) == []


def test_installed_serve_check_accepts_the_example_config(installed: Installed) -> None:
    out = subprocess.run(
        [str(installed.exe), "serve", "--config", str(installed.config), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NUMBA_CACHE_DIR": str(installed.cache)},
        cwd="/",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["model"] == source_bundle_id()
    assert Path(report["checkpoint"]).parent == installed.state
    assert report["warnings"] == []


def test_serve_check_refuses_a_broken_config(installed: Installed, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(installed.config.read_text().replace('backend = "', 'backend = "cuda-', 1))
    out = subprocess.run(
        [str(installed.exe), "serve", "--config", str(bad), "--check"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 78  # RestartPreventExitStatus=78 in the unit
    assert "model.backend" in out.stderr


MDWE_EXEC = """
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(f"PR_SET_MDWE unsupported (errno {ctypes.get_errno()})")
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_memory_deny_write_execute_breaks_the_jit_but_not_the_compiled_kernels(
    installed: Installed, tmp_path: Path
) -> None:
    """Why the unit leaves MemoryDenyWriteExecute= off: under the kernel's equivalent
    (PR_SET_MDWE, inherited across exec) numba cannot JIT at all. The ahead-of-time kernels
    need no writable-executable memory."""
    base = [
        str(installed.python),
        "-I",
        "-c",
        MDWE_EXEC,
        str(installed.exe),
        "serve",
        "--config",
        str(installed.config),
    ]
    env = {**os.environ, "EDGE_GRU_MODEL_BACKEND": "numba"}
    jit = subprocess.run(
        [*base, "--check"],
        env={**env, "EDGE_GRU_KERNELS": "jit", "NUMBA_CACHE_DIR": str(tmp_path / "jit-cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "PR_SET_MDWE unsupported" in jit.stderr:
        pytest.skip(f"this kernel has no PR_SET_MDWE (Linux >= 6.3): {jit.stderr.strip()}")
    assert jit.returncode != 0
    assert "executable memory" in jit.stderr, jit.stderr[-2000:]
    aot = subprocess.run(
        [*base, "--check"],
        env={**env, "EDGE_GRU_KERNELS": "aot", "NUMBA_CACHE_DIR": str(installed.cache)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert aot.returncode == 0, aot.stdout + aot.stderr
    assert json.loads(aot.stdout)["backend"] == "numba"


def _as_unprivileged() -> list[str]:
    """Run as nobody when we are root (DynamicUser= is never root); as ourselves otherwise."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]


def _cache_files(cache: Path) -> dict[str, float]:
    return {str(p.relative_to(cache)): p.stat().st_mtime for p in cache.rglob("*") if p.is_file()}


def test_installed_daemon_notifies_systemd(installed: Installed, broker: Broker, topic_prefix: str) -> None:
    """READY=1 once subscribed, WATCHDOG=1 well within WATCHDOG_USEC, reload and stop as systemd drives them."""
    # What systemd does for StateDirectory= and CacheDirectory=: the service's user owns them.
    installed.state.mkdir(parents=True, exist_ok=True)
    uid = NOBODY if os.geteuid() == 0 else os.geteuid()
    for top in (installed.state, installed.cache):
        for path in [top, *top.rglob("*")]:
            os.chown(path, uid, uid)
    cache_before = _cache_files(installed.cache)

    client_id = f"node-{topic_prefix}"
    watchdog_usec = 2_000_000  # the daemon pings at half of it; a busy CI machine keeps a margin
    notify = NotifySocket()
    os.chmod(os.path.dirname(notify.path), 0o755)
    os.chmod(notify.path, 0o777)
    watcher = Watcher(broker.host, broker.port, [f"{topic_prefix}/#"], protocol="5")
    status_watch = Watcher(broker.host, broker.port, [f"edge-gru/{client_id}/status"], protocol="5")
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "NUMBA_CACHE_DIR": str(installed.cache),  # as Environment= in the unit
        "NOTIFY_SOCKET": notify.path,
        "WATCHDOG_USEC": str(watchdog_usec),
        # per-device overrides, as the unit's EnvironmentFile=/etc/edge-gru/edge-gru.env would give them
        "EDGE_GRU_MQTT_HOST": broker.host,
        "EDGE_GRU_MQTT_PORT": str(broker.port),
        "EDGE_GRU_MQTT_CLIENT_ID": client_id,
        "EDGE_GRU_STREAMS_INPUT": f"{topic_prefix}/sensors/{{stream}}/value",
        "EDGE_GRU_STREAMS_OUTPUT": f"{topic_prefix}/predictions/{{stream}}",
    }
    log_path = installed.root.parent / f"daemon-{client_id}.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [*_as_unprivileged(), str(installed.exe), "serve", "--config", str(installed.config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
        )
    try:
        notify.wait_for("READY", "1", timeout=90)
        assert daemon.poll() is None, log_path.read_text()
        # It runs the kernels install.sh compiled, without numba's compiler in the process.
        maps = Path(f"/proc/{daemon.pid}/maps").read_text()
        assert "_edge_gru_kernels_" in maps and "llvmlite" not in maps
        assert status_watch_has(status_watch, client_id, b"online", 10)

        # Periodic WATCHDOG=1, each well inside WATCHDOG_USEC.
        t_start = time.monotonic()
        pings = [notify.wait_for("WATCHDOG", "1", timeout=watchdog_usec / 1e6) for _ in range(5)]
        gaps = [b - a for a, b in zip([t_start, *pings], pings, strict=False)]
        assert max(gaps) < watchdog_usec / 1e6, gaps

        # It serves: readings in, forecasts out after the warm-up.
        t0 = 1_700_000_000.0
        pub = Publisher(broker.host, broker.port, protocol="5")
        pub.publish_all(
            [
                (f"{topic_prefix}/sensors/meter-1/value", json.dumps({"value": 10.0 + (i % 5), "ts": t0 + 60 * i}))
                for i in range(20)
            ]
        )
        pub.close()
        deadline = time.monotonic() + 30
        while not watcher.on(f"{topic_prefix}/predictions/meter-1") and time.monotonic() < deadline:
            time.sleep(0.05)
        forecasts = [json.loads(p) for p in watcher.on(f"{topic_prefix}/predictions/meter-1")]
        assert forecasts and forecasts[0]["model"] == source_bundle_id(), log_path.read_text()[-3000:]

        # systemctl reload edge-gru == SIGHUP: RELOADING=1, then READY=1 again.
        daemon.send_signal(signal.SIGHUP)
        notify.wait_for("RELOADING", "1", timeout=30)
        notify.wait_for("READY", "1", timeout=60)
        assert daemon.poll() is None

        # systemctl stop == SIGTERM: STOPPING=1, exit 0, a checkpoint in the state directory.
        daemon.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING", "1", timeout=30)
        assert daemon.wait(60) == 0, log_path.read_text()[-3000:]
        assert (installed.state / f"{client_id}.checkpoint.npz").is_file()
        assert status_watch_has(status_watch, client_id, b"offline", 10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        notify.close()
        watcher.close()
        status_watch.close()
    text = log_path.read_text()
    assert "tensorflow_loaded=false" in text
    # The first start used the kernels install.sh compiled: numba wrote nothing new.
    new = set(_cache_files(installed.cache)) - set(cache_before)
    assert not new, f"the daemon compiled kernels at start: {sorted(new)}"


def status_watch_has(watcher: Watcher, client_id: str, payload: bytes, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = watcher.on(f"edge-gru/{client_id}/status")
        if seen and seen[-1] == payload:
            return True
        time.sleep(0.05)
    return False


def test_install_refuses_a_source_tree_that_is_not_one(tmp_path: Path) -> None:
    out = run_install(tmp_path / "root", "--from", str(tmp_path))
    assert out.returncode != 0
    assert "pyproject.toml" in out.stderr
    assert not (tmp_path / "root" / "opt" / "edge-gru" / "venv").exists()


def _stub(directory: Path, name: str, script: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text("#!/bin/sh\n" + script + "\n")
    (directory / name).chmod(0o755)


def test_install_refuses_32_bit_arm_and_points_to_the_c_export(tmp_path: Path) -> None:
    _stub(tmp_path / "bin", "uname", 'if [ "$1" = "-m" ]; then echo armv7l; else exec /bin/uname "$@"; fi')
    out = subprocess.run(
        ["bash", str(INSTALL), "--prefix", str(tmp_path / "root"), "--from", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"},
    )
    assert out.returncode != 0
    assert "32-bit ARM" in out.stderr and "edge-gru export-c" in out.stderr and "64-bit OS" in out.stderr
    assert not (tmp_path / "root" / "opt" / "edge-gru" / "venvs").exists()


def test_install_refuses_an_old_python(tmp_path: Path) -> None:
    _stub(tmp_path / "bin", "python3.10", "echo 3.10")
    out = run_install(tmp_path / "root", "--from", str(ROOT), "--python", str(tmp_path / "bin" / "python3.10"))
    assert out.returncode != 0
    assert "needs 3.11 or newer" in out.stderr


def build_wheel(out: Path) -> Path:
    """A wheel of the working tree, built from a copy so that the checkout gets no build/ directory."""
    src = out / "src"
    src.mkdir(parents=True)
    for item in ("pyproject.toml", "README.md", "edge_gru", "sim", "firmware_export"):
        if (ROOT / item).is_dir():
            shutil.copytree(ROOT / item, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.nb?"))
        elif (ROOT / item).exists():
            shutil.copy2(ROOT / item, src / item)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("edge_gru-*.whl")
    return wheel


def test_failed_upgrade_leaves_the_installation_serving_and_a_rerun_is_idempotent(
    installed: Installed, tmp_path: Path
) -> None:
    venv_before = os.readlink(installed.opt / "venv")
    edited = installed.config.read_text() + "\n# edited on the device\n"
    installed.config.write_text(edited)

    # An upgrade whose pip install fails (no package index) changes nothing.
    failed = run_install(installed.root, "--from", str(ROOT), "--pip-args", "--no-index --find-links /nonexistent")
    assert failed.returncode != 0
    assert "running installation is untouched" in failed.stderr
    assert os.readlink(installed.opt / "venv") == venv_before
    assert [p.name for p in (installed.opt / "venvs").iterdir()] == [Path(venv_before).name]
    assert installed.config.read_text() == edited

    # The check at the end of an install sees the device's overrides, as the daemon would.
    env_file = installed.config.parent / "edge-gru.env"
    env_file.write_text("EDGE_GRU_STATS_INTERVAL_S=-1\n")
    # The rerun installs a built wheel (--wheel), as a release would.
    again = run_install(installed.root, "--wheel", str(build_wheel(tmp_path)), "--no-precompile")
    env_file.unlink()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "stats.interval_s" in again.stderr and "does not pass 'edge-gru serve --check'" in again.stdout
    venv_after = os.readlink(installed.opt / "venv")
    assert venv_after != venv_before
    assert [p.name for p in (installed.opt / "venvs").iterdir()] == [Path(venv_after).name]
    assert installed.config.read_text() == edited, "install.sh overwrote an existing config"
    assert f"keeping your config {installed.config}" in again.stdout
    # the old environment's kernels are gone with it (--no-precompile: no new ones yet)
    assert list(installed.cache.glob("edge_gru_*")) == []
    assert "kernels not compiled" in again.stdout
    ok = subprocess.run([str(installed.exe), "--version"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "0." in ok.stdout


def test_uninstall_removes_everything_but_the_state(installed: Installed) -> None:
    installed.state.mkdir(parents=True, exist_ok=True)
    checkpoint = installed.state / "node.checkpoint.npz"
    checkpoint.write_bytes(b"state")
    installed.config.write_text(installed.config.read_text() + "\n# my edit\n")

    out = run_install(installed.root, "--uninstall")
    assert out.returncode == 0, out.stdout + out.stderr
    for gone in (installed.opt, installed.config.parent, installed.unit, installed.cache):
        assert not gone.exists(), gone
    assert checkpoint.read_bytes() == b"state"
    assert "# my edit" in (installed.state / "edge-gru.toml.saved").read_text()

    assert run_install(installed.root, "--uninstall").returncode == 0  # nothing left to do is fine
    purge = run_install(installed.root, "--uninstall", "--purge")
    assert purge.returncode == 0
    assert not installed.state.exists()
