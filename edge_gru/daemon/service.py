"""``edge-gru serve``: wires config, model, worker, MQTT, checkpoints and systemd together.

Threads: paho's network thread parses and enqueues (:meth:`Worker.submit`); the worker
thread owns the pool and runs batches, checkpoints, idle expiry, stats and the systemd
watchdog; the main thread waits for signals. SIGTERM/SIGINT: stop acknowledging new
readings (the broker keeps them for the next run), drain the queue, checkpoint, publish
``offline``, disconnect, exit 0. SIGHUP: reload the bundle; a bad one is refused and the
old model keeps serving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import numpy as np

import edge_gru
from edge_gru.daemon.checkpoint import Checkpointer
from edge_gru.daemon.config import Config, ModelConfig, adaptation_spec, describe, load_config
from edge_gru.daemon.discovery import Discovery
from edge_gru.daemon.logs import event
from edge_gru.daemon.mqttclient import MqttClient
from edge_gru.daemon.notify import Notifier
from edge_gru.daemon.payload import InputTopics
from edge_gru.daemon.worker import Worker
from edge_gru.errors import EdgeGruError
from edge_gru.model import Model

log = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: configuration error (systemd: RestartPreventExitStatus=78)
STATUS_INTERVAL_S = 10.0
EXPIRE_INTERVAL_S = 60.0


def forbid_tensorflow() -> None:
    """Make ``import tensorflow`` fail in this process (the ``serve`` command calls this first).

    The daemon runs on devices without TensorFlow; where LiteRT is missing, the tflite
    backend's last fallback would otherwise pull TensorFlow (hundreds of MiB) into a
    long-running process. With this, that backend reports that it needs LiteRT instead.
    """
    if sys.modules.get("tensorflow") is None:
        sys.modules["tensorflow"] = None  # type: ignore[assignment]


def load_model(cfg: ModelConfig) -> Model:
    """Load and smoke-test a bundle: one step from a zero state must give a finite forecast."""
    model = edge_gru.load(cfg.path, backend=cfg.backend)
    y = model.warm_up()  # the serving path once: the first real batch does not load or compile kernels
    if not np.all(np.isfinite(y)):
        raise EdgeGruError(f"{cfg.path}: the model's output from a zero state is not finite; refusing the bundle")
    return model


class Service:
    """The daemon. ``run()`` blocks until SIGTERM/SIGINT or :meth:`request_stop`, then returns the exit code."""

    def __init__(self, cfg: Config, *, notifier: Notifier | None = None, model: Model | None = None) -> None:
        self.cfg = cfg
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.model = model if model is not None else load_model(cfg.model)
        s = cfg.streams
        self.topics = InputTopics(s.input, s.pack_input, s.senml_input)
        self.mqtt = MqttClient(
            cfg.mqtt, subscriptions=self.topics.subscriptions(), on_message=self._on_message, on_ready=self._on_ready
        )
        self.discovery = (
            Discovery(cfg, self.mqtt, version=edge_gru.__version__, horizon=self.model.manifest.horizon)
            if cfg.homeassistant.enabled
            else None
        )
        self.worker = Worker(
            model=self.model,
            publisher=self.mqtt,
            settings=s,
            warn_interval_s=cfg.logging.warn_interval_s,
            on_first_forecast=self.discovery.announce if self.discovery else None,
            adaptation=lambda m: adaptation_spec(cfg.model, m.manifest.extra),
        )
        self.checkpointer = Checkpointer(cfg.checkpoint_path)
        self.checkpointer.restore(self.worker.pool)
        self._saved_batches = 0  # worker batches covered by the last checkpoint
        self.worker.add_periodic("checkpoint", cfg.state.checkpoint_interval_s, self.checkpoint)
        if s.idle_timeout_s is not None:
            self.worker.add_periodic(
                "expire_idle", min(EXPIRE_INTERVAL_S, s.idle_timeout_s / 4), self.worker.expire_idle
            )
        if cfg.stats.interval_s > 0:
            self.worker.add_periodic("stats", cfg.stats.interval_s, self.publish_stats)
        if self.notifier.watchdog_interval_s is not None:
            # at a quarter of WATCHDOG_USEC: systemd asks for half; the rest is margin for a busy machine
            interval = self.notifier.watchdog_interval_s / 2
            self.worker.add_periodic("watchdog", interval, lambda: self.notifier.watchdog(force=True))
        if self.notifier.enabled:
            self.worker.add_periodic("sd_status", STATUS_INTERVAL_S, lambda: self.notifier.status(self.summary()))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload_requested = False
        self.stopping = False
        self.left_to_broker = 0  # readings not acknowledged while stopping (redelivered next run)
        self.config_path: str | None = None if cfg.source == "<defaults>" else cfg.source

    # -- MQTT callbacks (network thread) ---------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes, received: float) -> bool:
        if self.stopping:
            self.left_to_broker += 1
            return False  # not acknowledged: the broker redelivers it to the next run
        self.worker.submit(topic, payload, received)
        return True

    def _on_ready(self) -> None:
        self.notifier.ready(self.summary())
        event(
            log,
            logging.INFO,
            "ready",
            streams=len(self.worker.pool),
            model=self.model.id,
            backend=self.model.backend_name,
        )

    # -- worker-thread tasks ---------------------------------------------------------------------
    def checkpoint(self, *, force: bool = False) -> bool:
        """Save the pool, unless no reading arrived since the last save (an idle device need not wear its SD card)."""
        batches = self.worker.stats.batches
        if not force and batches == self._saved_batches:
            return True
        saved = self.checkpointer.save(self.worker.pool)
        if saved:
            self._saved_batches = batches
        return saved

    def stats_snapshot(self) -> dict[str, Any]:
        snap = self.worker.snapshot(mark=True)
        snap["reconnects"] = self.mqtt.reconnects
        snap["connected"] = self.mqtt.connected.is_set()
        snap["queued_out"] = self.mqtt.queued_out
        snap["checkpoints"] = self.checkpointer.saves
        snap["checkpoint_failures"] = self.checkpointer.failures
        snap["client_id"] = self.cfg.mqtt.client_id
        return snap

    def publish_stats(self) -> None:
        snap = self.stats_snapshot()
        if self.mqtt.connected.is_set():  # stats are a live view: none are queued while offline
            with contextlib.suppress(ConnectionError):
                self.mqtt.publish(self.cfg.stats_topic, json.dumps(snap, separators=(",", ":")).encode(), qos=0)
        event(log, logging.DEBUG, "stats", **{k: v for k, v in snap.items() if not isinstance(v, dict)})

    def summary(self) -> str:
        st = self.worker.stats
        return (
            f"{len(self.worker.pool)} streams, {st.received} in, {st.published} out, "
            f"{sum(st.dropped.values())} dropped, queue {self.worker.queued}"
        )

    # -- signals and lifecycle (main thread) -----------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.request_reload()
        else:
            self.request_stop()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._signal)

    def start(self) -> None:
        event(
            log,
            logging.INFO,
            "starting",
            version=edge_gru.__version__,
            model=self.model.id,
            backend=self.model.backend_name,
            config=self.cfg.source,
            streams_restored=len(self.worker.pool),
            tensorflow_loaded=sys.modules.get("tensorflow") is not None,
            pid=os.getpid(),
        )
        event(log, logging.DEBUG, "config", settings=json.dumps(describe(self.cfg), default=str))
        self.worker.start()
        self.mqtt.start()
        self.notifier.status(f"connecting to {self.cfg.mqtt.host}:{self.cfg.mqtt.port}")

    def run(self) -> int:
        """Serve until asked to stop; returns the process exit code."""
        if threading.current_thread() is threading.main_thread():
            self.install_signal_handlers()
        self.start()
        code = 0
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._reload_requested and not self._stop.is_set():
                self._reload_requested = False
                self.reload()
            if not self.worker.alive:  # cannot happen by design; if it does, let systemd restart us
                event(log, logging.CRITICAL, "worker_died", detail="exiting so that the service manager restarts")
                code = 1
                break
        self.shutdown()
        return code

    def reload(self) -> bool:
        """Load the bundle named by the (re-read) config; on any error keep the current model."""
        self.notifier.reloading()
        old = self.model
        try:
            cfg = load_config(self.config_path) if self.config_path else self.cfg
            model = load_model(cfg.model)
        except (EdgeGruError, OSError, ValueError) as exc:
            event(
                log,
                logging.ERROR,
                "reload_refused",
                reason=str(exc),
                model=old.id,
                detail="the current model keeps serving",
            )
            self.notifier.ready(self.summary())
            return False
        changed = [
            name
            for name in ("mqtt", "streams", "state", "stats", "logging", "homeassistant")
            if getattr(cfg, name) != getattr(self.cfg, name)
        ]
        if changed:
            event(
                log,
                logging.WARNING,
                "reload_partial",
                sections=",".join(changed),
                detail="only [model] is reloaded; restart the service to apply the others",
            )
        try:
            self.worker.call_soon(lambda: self.worker.replace_model(model)).result(timeout=60)
        except Exception as exc:  # e.g. the worker is stuck: the watchdog deals with that, not the reload
            event(log, logging.ERROR, "reload_failed", reason=repr(exc), model=self.worker.model.id)
            self.notifier.ready(self.summary())
            return False
        self.model = model
        self.cfg = dataclasses.replace(self.cfg, model=cfg.model)
        if self.discovery is not None:
            self.discovery.horizon = model.manifest.horizon
        if model.id != old.id:
            self.worker.call_soon(lambda: self.checkpoint(force=True))  # the old bundle's checkpoint no longer applies
        event(
            log,
            logging.INFO,
            "model_reloaded",
            old=old.id,
            new=model.id,
            backend=model.backend_name,
            streams_kept=model.id == old.id,
        )
        self.notifier.ready(self.summary())
        return True

    def shutdown(self, *, timeout: float = 10.0) -> None:
        """Drain, checkpoint, publish offline, disconnect."""
        self.stopping = True
        self.notifier.stopping()
        event(log, logging.INFO, "stopping", queued=self.worker.queued)
        self.worker.stop(drain=True, timeout=timeout)
        if not self.worker.alive:  # a stuck worker keeps the pool: the last periodic checkpoint stands
            self.checkpoint(force=True)
        deadline = time.monotonic() + timeout
        while self.mqtt.connected.is_set() and self.mqtt.queued_out and time.monotonic() < deadline:
            time.sleep(0.01)  # let paho send the last forecasts
        self.mqtt.stop(timeout=max(deadline - time.monotonic(), 1.0))
        snap = self.worker.snapshot()
        event(
            log,
            logging.INFO,
            "stopped",
            received=snap["received"],
            published=snap["published"],
            dropped=snap["dropped_total"],
            streams=snap["streams"],
            checkpoints=self.checkpointer.saves,
            left_to_broker=self.left_to_broker,
        )
        self.notifier.close()


def check(cfg: Config) -> dict[str, Any]:
    """What ``serve --check`` verifies: the config (already loaded), the bundle and backend, the state dir."""
    model = load_model(cfg.model)
    report: dict[str, Any] = {
        "config": cfg.source,
        "model": model.id,
        "backend": model.backend_name,
        "mode": model.manifest.mode,
        "features": list(model.manifest.features),
        "subscriptions": InputTopics(
            cfg.streams.input, cfg.streams.pack_input, cfg.streams.senml_input
        ).subscriptions(),
        "output": cfg.streams.output,
        "status_topic": cfg.mqtt.status_topic,
        "checkpoint": str(cfg.checkpoint_path),
        "settings": describe(cfg),
        "warnings": [],
    }
    state = cfg.checkpoint_path.parent
    probe = state if state.exists() else next((p for p in state.parents if p.exists()), None)
    if probe is None or not os.access(probe, os.W_OK):
        report["warnings"].append(f"state.dir {state} is not writable: checkpoints will fail (serving continues)")
    if cfg.mqtt.username is not None:
        cfg.mqtt.resolved_password()  # a missing password_file is an error now, not at 3 am
    return report
