"""Scale-out and failover on a NATS cluster: stream-affine partitions, leases and checkpoints in JetStream.

Why NATS: it clusters, keeps readings in replicated JetStream streams, and partitions
subjects deterministically on the server (``partition(P, wildcard)`` mappings), so no
hand-made router sits between the sensors and the daemons. Its MQTT layer speaks 3.1.1
only (no MQTT 5, so no ``$share`` subscriptions), which is enough for the sensors; the
daemons read the partitions through JetStream with nats-py.

The flow (docs/scale-out.md):

- The server maps ``sensors.<stream>.value`` to ``<prefix>.<p>.sensors.<stream>.value`` with
  ``p = partition(P, stream)``; the input stream keeps every partition's readings.
- Members heartbeat into a KV bucket; every member computes the same balanced assignment of
  partitions to the live members (:func:`assign`). A member holds a lease per partition
  (compare-and-set on the KV revision, renewed every heartbeat) and releases a partition
  only after checkpointing it.
- Each partition has its own :class:`~edge_gru.daemon.worker.Worker` and pool, driven
  synchronously between fetches, so a checkpoint is exactly "the state after stream
  sequence S, plus the ledger of how every reading up to S ended". Checkpoints are one KV
  value per partition, written with compare-and-set so a stale owner cannot overwrite a newer one.
- A new owner loads the checkpoint and replays the partition from S + 1. Forecasts carry a
  ``Nats-Msg-Id`` made of the stream and the reading's time, so forecasts a dead owner
  already published are recognised by the output stream's duplicate window and stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edge_gru
from edge_gru.daemon.logs import RateLimitedWarnings, event
from edge_gru.daemon.notify import Notifier
from edge_gru.daemon.payload import STREAM, TopicMap, output_topic
from edge_gru.daemon.worker import Worker
from edge_gru.errors import CheckpointError
from edge_gru.model import Model
from edge_gru.pool import StreamPool

if TYPE_CHECKING:
    from edge_gru.daemon.config import Config

log = logging.getLogger(__name__)

CHECKPOINT_MAGIC = b"EGC1"
EXPIRE_INTERVAL_S = 60.0


# -- subjects -----------------------------------------------------------------------------------
def topic_to_subject(topic: str) -> str:
    """MQTT topic -> NATS subject, as the NATS server's MQTT layer translates it."""
    return topic.replace("/", ".")


def subject_to_topic(subject: str) -> str:
    return subject.replace(".", "/")


def subject_mappings(cfg: Config) -> dict[str, str]:
    """The server's ``mappings``: each input subject to its partition, keyed by the ``{stream}`` token."""
    c = cfg.cluster
    out: dict[str, str] = {}
    for template in cfg.streams.input:
        parts = template.split("/")
        source = ".".join("*" if p == STREAM else p for p in parts)
        dest = ".".join(
            [c.subject_prefix, f"{{{{partition({c.partitions},1)}}}}"]
            + ["{{wildcard(1)}}" if p == STREAM else p for p in parts]
        )
        out[source] = dest
    return out


def mappings_conf(cfg: Config) -> str:
    """The ``mappings`` block to paste into every node's nats-server.conf (same on all nodes)."""
    lines = ["mappings = {"]
    lines += [f'  "{src}": "{dst}"' for src, dst in subject_mappings(cfg).items()]
    lines.append("}")
    return "\n".join(lines) + "\n"


def output_subjects(cfg: Config) -> list[str]:
    return [topic_to_subject(output_topic(cfg.streams.output, "*"))]


def assign(partitions: int, members: list[str]) -> dict[str, set[int]]:
    """Balanced rendezvous assignment: the same on every member, and a leaving member's partitions
    mostly go to each partition's next-ranked member instead of reshuffling everyone's.

    Each partition ranks the members by a hash of (member, partition) and goes to the
    best-ranked one that holds fewer than ceil(partitions / members).
    """
    cap = -(-partitions // max(len(members), 1))
    out: dict[str, set[int]] = {m: set() for m in members}
    for p in range(partitions):
        ranked = sorted(members, key=lambda m: hashlib.blake2b(f"{m}/{p}".encode(), digest_size=8).digest())
        owner = next(m for m in ranked if len(out[m]) < cap)
        out[owner].add(p)
    return out


# -- checkpoints ----------------------------------------------------------------------------------
@dataclass
class Ledger:
    """How every reading of a partition up to ``seq`` ended; checkpointed with the state."""

    seq: int = 0
    received: int = 0
    published: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0  # forecasts recomputed after a takeover that the output stream already held

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "received": self.received,
            "published": self.published,
            "dropped": dict(sorted(self.dropped.items())),
            "duplicates": self.duplicates,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ledger:
        return cls(
            seq=int(data["seq"]),
            received=int(data["received"]),
            published=int(data["published"]),
            dropped=Counter({str(k): int(v) for k, v in data["dropped"].items()}),
            duplicates=int(data.get("duplicates", 0)),
        )


def encode_checkpoint(pool: StreamPool, ledger: Ledger, *, partition: int, member: str) -> bytes:
    """One partition's state as one value: magic, header length, JSON header, then ``pool.save``'s npz."""
    with tempfile.TemporaryDirectory(prefix="edge-gru-ckpt-") as tmp:
        path = Path(tmp) / "p.npz"
        pool.save(path)  # one home for the state format
        body = path.read_bytes()
    header = json.dumps(
        {
            "partition": partition,
            "bundle_id": pool.model.id,
            "member": member,
            "saved_at": time.time(),
            "ledger": ledger.to_json(),
        },
        separators=(",", ":"),
    ).encode()
    return CHECKPOINT_MAGIC + struct.pack(">I", len(header)) + header + body


def decode_checkpoint(blob: bytes, pool: StreamPool, *, where: str) -> Ledger:
    """Load ``blob`` into ``pool`` and return its ledger; a checkpoint of another bundle keeps only the ledger."""
    if blob[:4] != CHECKPOINT_MAGIC or len(blob) < 8:
        raise CheckpointError(f"{where}: not an edge-gru partition checkpoint")
    (n,) = struct.unpack(">I", blob[4:8])
    try:
        header = json.loads(blob[8 : 8 + n])
        ledger = Ledger.from_json(header["ledger"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{where}: unreadable checkpoint header ({exc})") from exc
    if header.get("bundle_id") != pool.model.id:
        event(
            log,
            logging.WARNING,
            "checkpoint_other_bundle",
            where=where,
            bundle=header.get("bundle_id"),
            loaded=pool.model.id,
            detail="the partition's streams start afresh from its checkpointed position",
        )
        return ledger
    with tempfile.TemporaryDirectory(prefix="edge-gru-ckpt-") as tmp:
        path = Path(tmp) / "p.npz"
        path.write_bytes(blob[8 + n :])
        pool.load(path)
    return ledger


# -- one partition ----------------------------------------------------------------------------------
class _Collector:
    """The partition worker's publisher: forecasts are sent to JetStream after the batch, with their ids."""

    def __init__(self) -> None:
        self.out: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        self.out.append((topic, payload))

    def take(self) -> list[tuple[str, bytes]]:
        out, self.out = self.out, []
        return out


@dataclass
class _Partition:
    n: int
    worker: Worker
    collector: _Collector
    lease_rev: int
    lease_until: float
    ckpt_rev: int = 0
    seq: int = 0  # stream sequence of the last reading applied and published
    saved_seq: int = -1
    last_ckpt: float = 0.0  # time.monotonic() of the last checkpoint attempt
    last_expiry: float = 0.0  # time.monotonic() of the last idle-stream expiry
    duplicates: int = 0
    release: bool = False
    checkpoint_waiters: list[asyncio.Future[bool]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    sub: Any = None

    def ledger(self) -> Ledger:
        st = self.worker.stats
        return Ledger(
            seq=self.seq,
            received=st.received,
            published=st.published,
            dropped=Counter(st.dropped),
            duplicates=self.duplicates,
        )


def forecast_msg_id(payload: bytes) -> str:
    """Deduplication id of a forecast: its stream and reading time (the same on a replay)."""
    data = json.loads(payload)
    return f"{data['stream']}@{data['ts']!r}"


# -- the member ------------------------------------------------------------------------------------
class ClusterService:
    """One member of the cluster. ``run()`` blocks until SIGTERM/SIGINT, then hands its partitions back."""

    def __init__(self, cfg: Config, *, model: Model | None = None, notifier: Notifier | None = None) -> None:
        from edge_gru.daemon.service import load_model

        self.cfg = cfg
        self.c = cfg.cluster
        self.member = self.c.member_id if self.c.member_id is not None else cfg.mqtt.client_id
        self.model = model if model is not None else load_model(cfg.model)
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.topics = TopicMap(cfg.streams.input)
        self.parts: dict[int, _Partition] = {}
        self.members: list[str] = []
        self._prefix_len = len(self.c.subject_prefix) + 1
        self._stop: asyncio.Event | None = None
        self.takeovers = 0
        self.releases = 0
        self.lost = 0
        self._background: set[asyncio.Future[Any]] = set()
        self.handed_back = Ledger()  # totals of the partitions this member checkpointed and released

    # -- keys ------------------------------------------------------------------------------------
    def _lease_key(self, n: int) -> str:
        return f"lease.p{n}"

    def _ckpt_key(self, n: int) -> str:
        return f"ckpt.p{n}"

    @property
    def control_subject(self) -> str:
        return f"edge-gru.{self.member}.control"

    @property
    def stats_subject(self) -> str:
        return topic_to_subject(self.cfg.stats.topic.replace("{client_id}", self.member))

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        import nats

        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(RuntimeError, ValueError):  # not the main thread
                loop.add_signal_handler(sig, self._stop.set)
        with contextlib.suppress(RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, lambda: self._background.add(asyncio.ensure_future(self.reload())))

        warnings = RateLimitedWarnings(log, interval_s=self.cfg.logging.warn_interval_s)

        async def on_error(exc: Exception) -> None:  # e.g. every failed (re)connect attempt: rate-limited
            warnings.warn(type(exc).__name__, "nats_error", detail=str(exc) or type(exc).__name__)

        async def on_disconnect() -> None:
            event(log, logging.WARNING, "nats_disconnected")

        async def on_reconnect() -> None:
            event(log, logging.INFO, "nats_reconnected", server=str(getattr(self.nc.connected_url, "netloc", "")))

        event(
            log,
            logging.INFO,
            "starting",
            version=edge_gru.__version__,
            member=self.member,
            model=self.model.id,
            backend=self.model.backend_name,
            partitions=self.c.partitions,
            pid=os.getpid(),
        )
        # No server reachable at start: nats-py keeps trying (max_reconnect_attempts=-1); SIGTERM still stops us.
        connect = asyncio.ensure_future(
            nats.connect(
                servers=list(self.c.servers),
                name=self.member,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=2,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
            )
        )
        stopped = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({connect, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not connect.done():
            connect.cancel()
            with contextlib.suppress(BaseException):
                await connect
            event(log, logging.INFO, "stopped", detail="before connecting to any NATS server")
            return 0
        stopped.cancel()
        self.nc = connect.result()  # an error here is a bad server list: the service manager restarts us
        self.js = self.nc.jetstream(timeout=2.0)
        await self._ensure_infrastructure()
        control = await self.nc.subscribe(self.control_subject, cb=self._on_control)
        self.notifier.ready(f"member {self.member}")
        event(log, logging.INFO, "ready", member=self.member, servers=",".join(self.c.servers))
        last_stats = time.monotonic()
        while not self._stop.is_set():
            try:
                await self._tick()
            except Exception as exc:  # a broker node down or electing: the next tick retries
                event(log, logging.WARNING, "tick_failed", detail=repr(exc))
            if self.notifier.watchdog_interval_s is not None:
                self.notifier.watchdog(force=True)
            if self.cfg.stats.interval_s > 0 and time.monotonic() - last_stats >= self.cfg.stats.interval_s:
                last_stats = time.monotonic()
                with contextlib.suppress(Exception):
                    await self.nc.publish(self.stats_subject, json.dumps(self.stats()).encode())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.c.heartbeat_s)
        await self._shutdown(control)
        return 0

    async def _ensure_infrastructure(self) -> None:
        """Create the input and output streams and the KV buckets when the cluster has none yet."""
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import APIError, NotFoundError

        c = self.c
        streams = [
            (c.input_stream, [f"{c.subject_prefix}.*.>"], c.retention_s),
            (c.output_stream, output_subjects(self.cfg), c.output_retention_s),
        ]
        for name, subjects, max_age in streams:
            config = StreamConfig(
                name=name,
                subjects=subjects,
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                num_replicas=c.replicas,
                max_age=max_age,
                duplicate_window=c.duplicate_window_s,
            )
            await self._retry(
                lambda config=config: self._ensure_stream(config, APIError, NotFoundError),  # type: ignore[misc]
                f"stream {name}",
            )
        self.kv_members = await self._retry(
            lambda: self._ensure_kv(f"{c.bucket}-members", 60 * c.lease_ttl_s), "members bucket"
        )
        self.kv = await self._retry(lambda: self._ensure_kv(c.bucket, None), "state bucket")

    async def _ensure_stream(self, config: Any, api_error: type[Exception], not_found: type[Exception]) -> None:
        try:
            await self.js.stream_info(config.name)
            return
        except not_found:
            pass
        try:
            await self.js.add_stream(config)
        except api_error:  # another member created it a moment ago
            await self.js.stream_info(config.name)

    async def _ensure_kv(self, bucket: str, ttl: float | None) -> Any:
        from nats.js.api import KeyValueConfig, StorageType
        from nats.js.errors import BucketNotFoundError

        try:
            return await self.js.key_value(bucket)
        except BucketNotFoundError:
            pass
        with contextlib.suppress(Exception):  # a concurrent creation wins; key_value below tells
            await self.js.create_key_value(
                KeyValueConfig(bucket=bucket, history=1, replicas=self.c.replicas, storage=StorageType.FILE, ttl=ttl)
            )
        return await self.js.key_value(bucket)

    async def _retry(self, fn: Any, what: str, attempts: int = 60) -> Any:
        for i in range(attempts):
            try:
                return await fn()
            except Exception as exc:
                if i == attempts - 1:
                    raise
                event(log, logging.WARNING, "cluster_setup_retry", what=what, detail=repr(exc))
                await asyncio.sleep(0.5)
        return None

    async def _shutdown(self, control: Any) -> None:
        event(log, logging.INFO, "stopping", partitions=len(self.parts))
        for part in list(self.parts.values()):
            part.release = True
        tasks = [p.task for p in self.parts.values() if p.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=max(10.0, 2 * self.c.lease_ttl_s))
        with contextlib.suppress(Exception):
            await self.kv_members.delete(self.member)
        with contextlib.suppress(Exception):
            await control.unsubscribe()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        done = self.handed_back
        event(
            log,
            logging.INFO,
            "stopped",
            partitions_released=self.releases,
            takeovers=self.takeovers,
            received=done.received,
            published=done.published,
            dropped=sum(done.dropped.values()),
        )
        self.notifier.close()

    # -- membership and leases ---------------------------------------------------------------------
    async def _tick(self) -> None:
        from nats.js.errors import KeyNotFoundError

        now = time.time()
        ttl = self.c.lease_ttl_s
        await self.kv_members.put(self.member, json.dumps({"until": now + ttl}).encode())
        live = []
        for key in await self._member_keys():
            try:
                entry = await self.kv_members.get(key)
            except KeyNotFoundError:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if json.loads(entry.value)["until"] > now:
                    live.append(key)
        if self.member not in live:
            live.append(self.member)
        live.sort()
        if live != self.members:
            event(log, logging.INFO, "members", members=",".join(live))
            self.members = live
        target = assign(self.c.partitions, live)[self.member]
        for n, part in list(self.parts.items()):
            if part.release:
                continue
            if not await self._renew(part):
                continue
            if n not in target:
                part.release = True
        for n in sorted(target - set(self.parts)):
            if self._stop is not None and self._stop.is_set():
                break
            await self._try_acquire(n)

    async def _member_keys(self) -> list[str]:
        """Keys of the members bucket, from the stream's per-subject counts (one request, no watcher)."""
        bucket = f"{self.c.bucket}-members"
        prefix = f"$KV.{bucket}."
        info = await self.js.stream_info(f"KV_{bucket}", subjects_filter=f"{prefix}>")
        return [subject[len(prefix) :] for subject in (info.state.subjects or {})]

    def _lease_value(self, until: float) -> bytes:
        return json.dumps({"owner": self.member, "until": until}).encode()

    async def _renew(self, part: _Partition) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        until = time.time() + self.c.lease_ttl_s
        try:
            key, value = self._lease_key(part.n), self._lease_value(until)
            part.lease_rev = await self.kv.update(key, value, last=part.lease_rev)
        except KeyWrongLastSequenceError:
            self._drop(part, "lease_taken")
            return False
        except Exception as exc:
            if time.time() > part.lease_until:  # could not renew in time: another member may own it now
                self._drop(part, f"lease_expired ({exc!r})")
            return False
        part.lease_until = until
        return True

    async def _try_acquire(self, n: int) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        key = self._lease_key(n)
        now = time.time()
        until = now + self.c.lease_ttl_s
        try:
            try:
                entry = await self.kv.get(key)
            except KeyNotFoundError:
                rev = await self.kv.create(key, self._lease_value(until))
            else:
                held = json.loads(entry.value)
                if held.get("owner") != self.member and held.get("until", 0) > now:
                    return  # still held: its owner releases it, or the lease runs out
                rev = await self.kv.update(key, self._lease_value(until), last=entry.revision)
        except KeyWrongLastSequenceError:
            return  # another member was faster
        await self._take_over(n, rev, until)

    async def _take_over(self, n: int, lease_rev: int, until: float) -> None:
        from nats.js.errors import KeyNotFoundError

        s = self.cfg.streams
        collector = _Collector()
        worker = Worker(
            model=self.model,
            publisher=collector,
            settings=dataclasses.replace(s, queue_policy="drop_newest", output_retain=False),
            warn_interval_s=self.cfg.logging.warn_interval_s,
        )
        part = _Partition(
            n=n, worker=worker, collector=collector, lease_rev=lease_rev, lease_until=until, last_ckpt=time.monotonic()
        )
        try:
            entry = await self.kv.get(self._ckpt_key(n))
        except KeyNotFoundError:
            entry = None
        if entry is not None and entry.value:
            try:
                ledger = decode_checkpoint(entry.value, worker.pool, where=f"{self.c.bucket}/{self._ckpt_key(n)}")
            except CheckpointError as exc:
                # Without its ledger the partition's position is unknown: start at the retained beginning.
                event(log, logging.ERROR, "checkpoint_unusable", partition=n, reason=str(exc))
            else:
                part.seq = part.saved_seq = ledger.seq
                st = worker.stats
                st.received, st.published, st.dropped = ledger.received, ledger.published, Counter(ledger.dropped)
                part.duplicates = ledger.duplicates
            part.ckpt_rev = entry.revision
        self.parts[n] = part
        self.takeovers += 1
        event(log, logging.INFO, "partition_acquired", partition=n, seq=part.seq, streams=len(worker.pool))
        part.task = asyncio.create_task(self._consume(part), name=f"partition-{n}")

    def _drop(self, part: _Partition, reason: str) -> None:
        """Forget a partition without a checkpoint: someone else owns it now (or will)."""
        if self.parts.get(part.n) is not part:
            return
        del self.parts[part.n]
        self.lost += 1
        event(log, logging.WARNING, "partition_lost", partition=part.n, reason=reason, seq=part.seq)
        if part.task is not None and part.task is not asyncio.current_task():
            part.task.cancel()
        for fut in part.checkpoint_waiters:
            if not fut.done():
                fut.set_result(False)
        if part.sub is not None:
            self._background.add(asyncio.ensure_future(self._unsubscribe(part.sub)))
            self._background = {t for t in self._background if not t.done()}

    @staticmethod
    async def _unsubscribe(sub: Any) -> None:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    # -- consuming a partition --------------------------------------------------------------------
    async def _subscribe(self, part: _Partition) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=part.seq + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=max(30.0, 3 * self.c.lease_ttl_s),
            num_replicas=1,
            mem_storage=True,
        )
        if part.seq:
            first = (await self.js.stream_info(self.c.input_stream)).state.first_seq
            if first > part.seq + 1:
                # The stream dropped readings (retention_s) past this partition's position: some may have
                # been this partition's, and those never reach the ledger. A longer retention_s prevents it.
                event(
                    log,
                    logging.ERROR,
                    "readings_may_have_expired",
                    partition=part.n,
                    seq=part.seq,
                    first_seq=first,
                    retention_s=self.c.retention_s,
                )
        return await self.js.pull_subscribe(
            f"{self.c.subject_prefix}.{part.n}.>", stream=self.c.input_stream, config=config
        )

    async def _consume(self, part: _Partition) -> None:
        import nats.errors
        from nats.js.errors import NotFoundError

        fetch_timeout = min(self.c.heartbeat_s, 1.0)
        while self.parts.get(part.n) is part:
            if part.release:
                await self._release(part)
                return
            if part.checkpoint_waiters or (
                part.seq != part.saved_seq and time.monotonic() - part.last_ckpt >= self.cfg.state.checkpoint_interval_s
            ):
                await self._checkpoint(part)
                continue
            if time.time() > part.lease_until:
                await asyncio.sleep(fetch_timeout / 4)  # the tick renews or drops it
                continue
            idle = self.cfg.streams.idle_timeout_s
            if idle is not None and time.monotonic() - part.last_expiry >= min(EXPIRE_INTERVAL_S, idle / 4):
                part.last_expiry = time.monotonic()
                part.worker.expire_idle()
            try:
                if part.sub is None:
                    part.sub = await self._subscribe(part)
                msgs = await part.sub.fetch(self.c.fetch_batch, timeout=fetch_timeout)
            except (TimeoutError, nats.errors.TimeoutError):
                # Quiet partition, or its consumer went with a broker node: ask, and start again if so.
                try:
                    await part.sub.consumer_info()
                except NotFoundError:
                    await self._resubscribe(part, "consumer_gone")
                except Exception:
                    await self._resubscribe(part, "consumer_unreachable")
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._resubscribe(part, repr(exc))
                await asyncio.sleep(fetch_timeout / 4)
                continue
            await self._process(part, msgs)

    async def _resubscribe(self, part: _Partition, reason: str) -> None:
        sub, part.sub = part.sub, None
        if sub is not None:
            event(log, logging.INFO, "partition_resubscribe", partition=part.n, seq=part.seq, reason=reason)
            await self._unsubscribe(sub)

    async def _process(self, part: _Partition, msgs: list[Any]) -> None:
        """Apply a fetched batch, publish its forecasts (each acknowledged), then advance the position."""
        w = part.worker
        last = part.seq
        skip = self._prefix_len
        for m in msgs:
            if m.headers and m.headers.get("Status"):
                continue
            meta = m.metadata
            seq = meta.sequence.stream
            if seq <= last:
                continue
            # Skip "<prefix>.<p>." to get the MQTT topic back; the reading's time, if it has none, is
            # the time JetStream stored it: the same on every replay, so forecast ids stay stable.
            rest = m.subject[skip:]
            topic = subject_to_topic(rest[rest.index(".") + 1 :])
            w.submit(topic, m.data, meta.timestamp.timestamp())
            last = seq
        if last == part.seq:
            return
        while w.process_available():
            pass
        out = part.collector.take()
        if time.time() > part.lease_until:
            # e.g. this process was suspended past its lease: another member may own the partition now.
            # Publish nothing; the tick renews the lease (and this batch is replayed) or drops the partition.
            self._drop(part, "lease_expired_in_batch")
            return
        if not await self._publish(part, out):
            return
        part.seq = last

    async def _publish(self, part: _Partition, out: list[tuple[str, bytes]]) -> bool:
        """Publish forecasts until JetStream has acknowledged each (retrying with the same ids)."""
        pending = [(topic_to_subject(t), p, {"Nats-Msg-Id": forecast_msg_id(p)}) for t, p in out]
        delay = 0.05
        while pending:
            if self.parts.get(part.n) is not part:
                return False
            futures = []
            try:
                for subject, payload, headers in pending:
                    futures.append(await self.js.publish_async(subject, payload, headers=dict(headers)))
            except Exception as exc:
                event(log, logging.WARNING, "publish_retry", partition=part.n, detail=repr(exc))
            results = await asyncio.gather(*(asyncio.wait_for(f, 2.0) for f in futures), return_exceptions=True)
            failed = []
            for item, res in zip(pending, results, strict=False):
                if isinstance(res, BaseException):
                    failed.append(item)
                elif res.duplicate:
                    part.duplicates += 1
            failed.extend(pending[len(results) :])
            pending = failed
            if pending:
                await asyncio.sleep(delay)
                delay = min(2 * delay, 1.0)
        return True

    async def _checkpoint(self, part: _Partition) -> bool:
        from nats.js.errors import KeyWrongLastSequenceError

        waiters, part.checkpoint_waiters = part.checkpoint_waiters, []
        ok = True
        if part.seq != part.saved_seq:
            blob = encode_checkpoint(part.worker.pool, part.ledger(), partition=part.n, member=self.member)
            seq = part.seq
            try:
                part.ckpt_rev = await self.kv.update(self._ckpt_key(part.n), blob, last=part.ckpt_rev)
            except KeyWrongLastSequenceError:
                self._drop(part, "checkpoint_superseded")  # a newer owner wrote one: ours is stale
                ok = False
            except Exception as exc:
                event(log, logging.WARNING, "checkpoint_failed", partition=part.n, detail=repr(exc))
                ok = False
            else:
                part.saved_seq = seq
                event(log, logging.DEBUG, "checkpoint_saved", partition=part.n, seq=seq, bytes=len(blob))
        part.last_ckpt = time.monotonic()
        for fut in waiters:
            if not fut.done():
                fut.set_result(ok)
        return ok

    async def _release(self, part: _Partition) -> None:
        """Hand a partition back: checkpoint it, then delete the lease so its next owner takes it at once."""
        for _ in range(20):
            if await self._checkpoint(part):
                break
            if self.parts.get(part.n) is not part:
                return
            await asyncio.sleep(0.25)
        else:  # not saved: the lease runs out, and the next owner replays from the older checkpoint
            self._drop(part, "checkpoint_failed_on_release")
            return
        with contextlib.suppress(Exception):
            await self.kv.delete(self._lease_key(part.n), last=part.lease_rev)
        if part.sub is not None:
            await self._unsubscribe(part.sub)
        if self.parts.get(part.n) is part:
            del self.parts[part.n]
        self.releases += 1
        ledger = part.ledger()
        self.handed_back.received += ledger.received
        self.handed_back.published += ledger.published
        self.handed_back.dropped.update(ledger.dropped)
        event(log, logging.INFO, "partition_released", partition=part.n, seq=part.seq, received=ledger.received)

    async def reload(self) -> bool:
        """SIGHUP: load the bundle the (re-read) config names; on any error the current model keeps serving.

        As in the single daemon, the same bundle id keeps every stream's state and another one
        starts the streams afresh (from each partition's current position).
        """
        from edge_gru.daemon.config import load_config
        from edge_gru.daemon.service import load_model
        from edge_gru.errors import EdgeGruError

        try:
            cfg = load_config(self.cfg.source) if self.cfg.source != "<defaults>" else self.cfg
            model = await asyncio.get_running_loop().run_in_executor(None, load_model, cfg.model)
        except (EdgeGruError, OSError, ValueError) as exc:
            event(log, logging.ERROR, "reload_refused", reason=str(exc), model=self.model.id)
            return False
        old, self.model = self.model, model
        for part in self.parts.values():  # between batches: everything runs on this event loop
            part.worker.replace_model(model)
        event(log, logging.INFO, "model_reloaded", old=old.id, new=model.id, streams_kept=model.id == old.id)
        return True

    # -- control and stats --------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        received = published = duplicates = 0
        dropped: Counter[str] = Counter()
        for part in self.parts.values():
            st = part.worker.stats
            received += st.received
            published += st.published
            dropped.update(st.dropped)
            duplicates += part.duplicates
        return {
            "member": self.member,
            "members": self.members,
            "partitions": sorted(self.parts),
            "positions": {str(n): p.seq for n, p in sorted(self.parts.items())},
            "received": received,
            "published": published,
            "dropped": dict(sorted(dropped.items())),
            "duplicates": duplicates,
            "streams": sum(len(p.worker.pool) for p in self.parts.values()),
            "expired": sum(p.worker.pool.expired for p in self.parts.values()),
            "takeovers": self.takeovers,
            "releases": self.releases,
            "lost": self.lost,
            "model": self.model.id,
            "backend": self.model.backend_name,
        }

    async def _on_control(self, msg: Any) -> None:
        """``stats`` -> this member's stats; ``checkpoint`` -> checkpoint every owned partition now."""
        command = msg.data.decode(errors="replace").strip()
        if command == "checkpoint":
            loop = asyncio.get_running_loop()
            futures = []
            for part in list(self.parts.values()):
                fut: asyncio.Future[bool] = loop.create_future()
                part.checkpoint_waiters.append(fut)
                futures.append(fut)
            results = await asyncio.gather(*futures)
            reply: dict[str, Any] = {"ok": all(results), **self.stats()}
        elif command == "stats":
            reply = self.stats()
        else:
            reply = {"error": f"unknown command {command!r}; send 'stats' or 'checkpoint'"}
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(json.dumps(reply).encode())
