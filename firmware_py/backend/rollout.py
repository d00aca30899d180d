"""Firmware rollouts in waves: a canary wave, then waves of readers, halted at the K-th failure.

``kaoclock backend rollout BUNDLE --site S --canary N --wave-size M --halt-on-failures K``:

1. The bundle is checked here first (the vendor's release key, every file
   hash), so a bad bundle is refused before any reader gets a byte.
2. The readers are the backend's registered devices (one site, or all),
   in (site, device) order. Readers already committed in an earlier run of
   the same rollout, and readers whose retained status already reports the
   release, are not sent it again.
3. Wave by wave (the canary wave of N first, then waves of M), every reader of
   the wave gets the bundle through the signed chunked transfer
   (:func:`firmware_py.backend.transfer.send_file`), its results checked
   against the device's registered key. The reader's updater installs it into
   the inactive slot, switches, checks its health and commits or rolls back;
   the reader reports ``update.committed`` / ``update.rolled_back`` /
   ``update.failed`` on its events topic (its UpdateReporter), which this
   module listens to. (The birth status is no outcome: a release on trial
   runs, and says so, before its health check has decided.)
4. A reader counts as failed when it refuses the transfer (bad bundle, older
   release, an update already waiting, no space), does not answer a transfer
   step within ``send_wait_s``, rolls back or fails the install, or reports no
   outcome within ``commit_timeout_s`` of having the bundle staged.
5. The next wave starts only when every reader of the wave is settled
   (committed or failed). When the failures reach K, the rollout halts after
   the wave in progress: the readers of later waves are marked
   ``not_reached`` and keep the slot they run.

Everything is recorded in ``rollouts`` / ``rollout_readers`` (SQLite or
PostgreSQL). The rollout's id comes from the release, the selection and the
bundle's hash, so running the same command again resumes it: committed
readers are skipped, failed and not reached ones are tried again.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_py.backend.commands import BrokerUnreachable, CommandSession, verify_result
from firmware_py.backend.db import Database
from firmware_py.backend.registry import DbDeviceRegistry
from firmware_py.backend.sync import Brokers
from firmware_py.backend.transfer import DEFAULT_CHUNK, TransferFailed, send_file
from firmware_py.errors import ExitCode, KaoclockError, UsageError
from firmware_py.mqtt.link import BrokerUrl, LinkSettings, MqttLink
from firmware_py.topics import fleet_filter, parse_topic

Key = tuple[str, str]

# Reader states in rollout_readers.
PENDING, SENDING, STAGED, COMMITTED, FAILED, NOT_REACHED = "pending", "sending", "staged", "committed", "failed", "not_reached"


class BrokerDown(KaoclockError):
    """The rollout could not reach any broker: nothing was sent."""

    exit_code = ExitCode.UNAVAILABLE


class RolloutIncomplete(KaoclockError):
    """The rollout halted, or ended with readers that did not commit the release."""

    exit_code = ExitCode.UPDATE_FAILED


def rollout_id(version: str, site: str | None, sha256: str) -> str:
    """The same release, selection and bundle give the same id: a re-run resumes."""
    return f"{version}-{site or 'all'}-{sha256[:8]}"


def plan_waves(readers: list[Key], canary: int, wave_size: int) -> list[list[Key]]:
    """The canary wave of ``canary`` readers, then waves of ``wave_size``."""
    if canary < 1 or wave_size < 1:
        raise UsageError("--canary and --wave-size must be at least 1")
    waves = [readers[:canary]] if readers else []
    rest = readers[canary:]
    waves += [rest[i : i + wave_size] for i in range(0, len(rest), wave_size)]
    return waves


# ---------------------------------------------------------------- the stored state


class RolloutStore:
    """``rollouts`` and ``rollout_readers`` in the backend database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def begin(
        self, rid: str, version: str, sha256: str, name: str, site: str | None, canary: int, wave_size: int, halt_on: int, busy_s: float = 0.0
    ) -> int:
        """Create the rollout, or start another run of it; returns the run number (1 for a new rollout).

        A run of it that was active less than ``busy_s`` seconds ago (another
        technician's, another host's) is not run twice: UsageError.
        """
        now = time.time()
        with self.db.tx() as cur:
            row = cur.execute("SELECT runs, state, updated FROM rollouts WHERE id=?", (rid,)).fetchone()
            if row is not None and row[1] == "running" and now - float(row[2]) < busy_s:
                raise UsageError(
                    f"rollout {rid} is being run by another process (last activity {now - float(row[2]):.0f} s ago); wait for it "
                    f"(`kaoclock backend rollout status {rid}`), or add --takeover if that process is gone"
                )
            if row is None:
                cur.execute(
                    "INSERT INTO rollouts(id, version, bundle_sha256, bundle_name, site, state, canary, wave_size, halt_on, runs, detail,"
                    " created, updated) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (rid, version, sha256, name, site, "running", canary, wave_size, halt_on, 1, "", now, now),
                )
                return 1
            runs = int(row[0]) + 1
            cur.execute(
                "UPDATE rollouts SET state='running', canary=?, wave_size=?, halt_on=?, runs=?, detail='', updated=? WHERE id=?",
                (canary, wave_size, halt_on, runs, now, rid),
            )
            return runs

    def finish(self, rid: str, state: str, detail: str) -> None:
        with self.db.tx() as cur:
            cur.execute("UPDATE rollouts SET state=?, detail=?, updated=? WHERE id=?", (state, detail, time.time(), rid))

    def reader_states(self, rid: str) -> dict[Key, str]:
        return {(r[0], r[1]): r[2] for r in self.db.query("SELECT site, device, state FROM rollout_readers WHERE rollout_id=?", (rid,))}

    def set_reader(self, rid: str, key: Key, state: str, *, wave: int | None = None, reason: str | None = None, detail: str | None = None,
                   attempt: bool = False) -> None:  # fmt: skip
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO rollout_readers(rollout_id, site, device, wave, state, reason, detail, attempts, updated) VALUES(?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (rollout_id, site, device) DO UPDATE SET state=excluded.state, reason=excluded.reason, detail=excluded.detail,"
                " wave=CASE WHEN ? THEN excluded.wave ELSE rollout_readers.wave END,"
                " attempts=rollout_readers.attempts + ?, updated=excluded.updated",
                (rid, key[0], key[1], wave or 0, state, reason, (detail or "")[:1000], int(attempt), time.time(), wave is not None, int(attempt)),
            )
            cur.execute("UPDATE rollouts SET updated=? WHERE id=?", (time.time(), rid))  # the run's heartbeat (see begin)

    def heartbeat(self, rid: str) -> None:
        with self.db.tx() as cur:
            cur.execute("UPDATE rollouts SET updated=? WHERE id=?", (time.time(), rid))

    def status(self, rid: str) -> dict[str, Any]:
        """The rollout and each reader's state; UsageError naming the known ids when there is no such rollout."""
        rows = self.db.query(
            "SELECT id, version, bundle_sha256, bundle_name, site, state, canary, wave_size, halt_on, runs, detail, created, updated"
            " FROM rollouts WHERE id=?",
            (rid,),
        )
        if not rows:
            known = [r[0] for r in self.db.query("SELECT id FROM rollouts ORDER BY created DESC LIMIT 10")]
            raise UsageError(f"no rollout {rid!r}" + (f"; recent ones: {', '.join(known)}" if known else "; none has been started"))
        r = rows[0]
        readers = [
            {"site": x[0], "device": x[1], "wave": x[2], "state": x[3], "reason": x[4], "detail": x[5] or None, "attempts": x[6]}
            for x in self.db.query(
                "SELECT site, device, wave, state, reason, detail, attempts FROM rollout_readers WHERE rollout_id=? ORDER BY wave, site, device",
                (rid,),
            )
        ]
        counts: dict[str, int] = {}
        for x in readers:
            counts[x["state"]] = counts.get(x["state"], 0) + 1
        return {
            "id": r[0],
            "version": r[1],
            "bundle_sha256": r[2],
            "bundle": r[3],
            "site": r[4],
            "state": r[5],
            "canary": r[6],
            "wave_size": r[7],
            "halt_on_failures": r[8],
            "runs": r[9],
            "detail": r[10],
            "created": _iso(r[11]),
            "updated": _iso(r[12]),
            "counts": counts,
            "readers": readers,
            "failed": [x for x in readers if x["state"] == FAILED],
        }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(t)))


# ---------------------------------------------------------------- the readers' outcomes


@dataclass
class _Watch:
    since: float
    outcome: tuple[str, str | None, str] | None = None  # (committed | failed, reason, detail)


@dataclass
class OutcomeWatcher:
    """Listens to the readers' events and retained status for the release's outcome on each reader (a plain subscription)."""

    brokers: Brokers
    version: str
    site: str | None = None
    firmware: dict[Key, str] = field(default_factory=dict)  # the running version from each reader's latest status
    _watch: dict[Key, _Watch] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    link: MqttLink | None = None

    def start(self, connect_s: float = 10.0) -> None:
        b = self.brokers
        self.link = MqttLink(
            LinkSettings(
                brokers=[BrokerUrl.parse(u) for u in b.urls],
                client_id=f"kaoclock-rollout-{hashlib.sha256(str(time.time_ns()).encode()).hexdigest()[:10]}",
                protocol="auto",
                tls=b.tls,
                username=b.username,
                password=b.password,
                clean_start=True,
                reconnect_min_s=0.5,
                reconnect_max_s=5.0,
            )
        )
        for channel in ("status", "events"):
            self.link.subscribe(fleet_filter(channel, b.prefix, self.site or "+"), self._on_message, qos=1)
        self.link.start()
        if self.link.wait_connected(connect_s) is None:
            self.link.stop()
            raise BrokerUnreachable(f"cannot reach the broker ({self.link.state.last_error})")

    def stop(self) -> None:
        if self.link is not None:
            self.link.stop()

    def expect(self, key: Key) -> None:
        """Start watching ``key``: only what arrives from now on counts."""
        with self._cond:
            self._watch[key] = _Watch(time.time())

    def _on_message(self, topic: str, payload: bytes, _props: Any = None) -> None:
        where = parse_topic(topic, self.brokers.prefix)
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if where is None or not isinstance(msg, dict):
            return
        key = (where[0], where[1])
        with self._cond:
            if where[2] == "status":
                # Not an outcome: a release on trial is already running (and says so) before its health check decides.
                if msg.get("state") == "online" and isinstance(msg.get("firmware"), str):
                    self.firmware[key] = msg["firmware"]
                return
            w = self._watch.get(key)
            if w is None or w.outcome is not None:
                return
            typ, data = msg.get("type"), msg.get("data") if isinstance(msg.get("data"), dict) else {}
            assert isinstance(data, dict)
            if data.get("version") not in (None, self.version):
                return  # the outcome of some other release
            if typ == "update.committed" and data.get("version") == self.version:
                w.outcome = (COMMITTED, None, f"committed in slot {data.get('slot')}")
            elif typ == "update.rolled_back":
                w.outcome = (FAILED, "rolled_back", str(data.get("reason") or "rolled back"))
            elif typ == "update.failed":
                w.outcome = (FAILED, "install_failed", str(data.get("reason") or "the install failed"))
            else:
                return
            self._cond.notify_all()

    def wait(self, keys: list[Key], deadline: float) -> dict[Key, tuple[str, str | None, str] | None]:
        """The outcome of each key (None: none arrived by ``deadline``, a monotonic time)."""
        with self._cond:
            while True:
                out = {k: self._watch[k].outcome for k in keys}
                left = deadline - time.monotonic()
                if all(o is not None for o in out.values()) or left <= 0:
                    return out
                self._cond.wait(min(left, 0.5))


# ---------------------------------------------------------------- the rollout


@dataclass
class Rollout:
    """One run of a rollout; :meth:`run` returns the summary (the same as ``rollout status``)."""

    db: Database
    key: Any  # the backend's Ed25519 signing key
    brokers: Brokers
    bundle: Path
    data: bytes
    version: str
    site: str | None
    canary: int = 1
    wave_size: int = 10
    halt_on: int = 1
    send_wait_s: float = 30.0
    commit_timeout_s: float = 600.0
    parallel: int = 8
    chunk_size: int = DEFAULT_CHUNK
    takeover: bool = False
    say: Callable[[str], None] = print

    def __post_init__(self) -> None:
        self.store = RolloutStore(self.db)
        self.registry = DbDeviceRegistry(self.db)
        self.sha256 = hashlib.sha256(self.data).hexdigest()
        self.id = rollout_id(self.version, self.site, self.sha256)
        self._last_beat = 0.0

    def readers(self) -> list[Key]:
        """The registered readers of the selection; UsageError for an unknown site or none at all."""
        if self.site is not None:
            sites = {r[0] for r in self.db.query("SELECT site FROM sites")} | {r[0] for r in self.db.query("SELECT site FROM devices")}
            if self.site not in sites:
                raise UsageError(f"--site {self.site}: unknown site (known: {', '.join(sorted(sites)) or 'none'})")
            rows = self.db.query("SELECT DISTINCT site, device FROM devices WHERE site=? ORDER BY site, device", (self.site,))
        else:
            rows = self.db.query("SELECT DISTINCT site, device FROM devices ORDER BY site, device")
        found = [(r[0], r[1]) for r in rows]
        if not found:
            where = f"at site {self.site}" if self.site else "at all"
            raise UsageError(f"no readers registered {where}; register them with `kaoclock backend devices add SITE DEVICE JWK_FILE`")
        return found

    def _session(self, key: Key) -> CommandSession:
        registry = self.registry
        b = self.brokers

        class Verified(CommandSession):
            def call(self, cmd: str, args: dict[str, Any], wait_s: float = 30.0) -> dict[str, Any] | None:
                result = super().call(cmd, args, wait_s)
                if result is not None:
                    try:
                        verify_result(result, registry)
                    except ValueError as exc:
                        raise TransferFailed(f"{cmd}: the result is not trusted: {exc}") from None
                return result

        return Verified(b.urls, key[0], key[1], self.key, tls=b.tls, username=b.username, password=b.password, prefix=b.prefix)

    def _beat(self, _received: int, _chunks: int) -> None:
        """A long transfer keeps the run's heartbeat fresh (at most every 10 s), so no other process takes it for dead."""
        now = time.monotonic()
        if now - self._last_beat >= 10.0:
            self._last_beat = now
            self.store.heartbeat(self.id)

    def _send(self, key: Key, wave: int) -> tuple[str, str | None, str]:
        """Transfer and stage the bundle on one reader: (staged | failed, reason, detail)."""
        self.store.set_reader(self.id, key, SENDING, wave=wave, attempt=True)
        try:
            with self._session(key) as s:
                done = send_file(
                    s,
                    "firmware",
                    self.data,
                    transfer_id=f"rollout-{self.sha256[:16]}",
                    chunk_size=self.chunk_size,
                    meta={"version": self.version},
                    wait_s=self.send_wait_s,
                    progress=self._beat,
                )
        except TransferFailed as exc:
            reason = (exc.result or {}).get("reason") or ("no_answer" if "no answer" in str(exc) else "refused")
            return FAILED, str(reason), str(exc)
        except BrokerUnreachable as exc:
            return FAILED, "broker", str(exc)
        return STAGED, None, f"staged {done.get('version')} (from {done.get('from_version')})"

    def run(self) -> dict[str, Any]:
        targets = self.readers()
        # The longest a live run stays silent: waiting for a wave's outcomes, or for a transfer step's answers.
        busy_s = 0.0 if self.takeover else self.commit_timeout_s + 8 * self.send_wait_s + 60
        run = self.store.begin(self.id, self.version, self.sha256, self.bundle.name, self.site, self.canary, self.wave_size, self.halt_on, busy_s)
        before = self.store.reader_states(self.id)
        watcher = OutcomeWatcher(self.brokers, self.version, self.site)
        try:
            watcher.start(connect_s=min(10.0, self.send_wait_s))
        except BrokerUnreachable as exc:
            self.store.finish(self.id, "interrupted", "the broker could not be reached; nothing was sent")
            raise BrokerDown(f"{exc}; nothing was sent. Check --broker and run the same command again") from None
        try:
            return self._waves(targets, before, watcher, run)
        except BaseException as exc:
            self.store.finish(self.id, "interrupted", f"stopped: {type(exc).__name__}: {exc}"[:500])
            raise
        finally:
            watcher.stop()

    def _waves(self, targets: list[Key], before: dict[Key, str], watcher: OutcomeWatcher, run: int) -> dict[str, Any]:
        time.sleep(0.5)  # the retained statuses arrive right after the subscription: readers already on the release
        done = [k for k in targets if before.get(k) == COMMITTED]
        already = [k for k in targets if k not in done and watcher.firmware.get(k) == self.version]
        for k in already:
            self.store.set_reader(self.id, k, COMMITTED, wave=0, reason="already_running", detail=f"its status reports {self.version} running")
        todo = [k for k in targets if k not in done and k not in already]
        waves = plan_waves(todo, self.canary, self.wave_size)
        for n, wave in enumerate(waves, 1):
            for k in wave:
                self.store.set_reader(self.id, k, PENDING, wave=n, reason=None, detail=None)
        self.say(
            f"rollout {self.id} (run {run}): release {self.version} to {len(targets)} reader(s); {len(done)} committed before, "
            f"{len(already)} already running it, {len(todo)} in {len(waves)} wave(s); halts at {self.halt_on} failure(s)"
        )
        failures = 0
        halted_after: int | None = None
        for n, wave in enumerate(waves, 1):
            label = "canary wave" if n == 1 else f"wave {n}"
            self.say(f"{label}: {', '.join(f'{s}/{d}' for s, d in wave)}")
            results: dict[Key, tuple[str, str | None, str]] = {}
            staged_at: dict[Key, float] = {}
            for k in wave:
                watcher.expect(k)  # before the transfer: the outcome can come quickly
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(self.parallel, len(wave)))) as pool:
                futures = {pool.submit(self._send, k, n): k for k in wave}
                for fut in concurrent.futures.as_completed(futures):
                    k = futures[fut]
                    state, reason, detail = fut.result()
                    if state == STAGED:
                        staged_at[k] = time.monotonic()
                        self.store.set_reader(self.id, k, STAGED, reason=None, detail=detail)
                    else:
                        results[k] = (state, reason, detail)
            if staged_at:
                outcomes = watcher.wait(list(staged_at), max(staged_at.values()) + self.commit_timeout_s)
                for k, o in outcomes.items():
                    results[k] = o or (FAILED, "timeout", f"no update outcome within {self.commit_timeout_s:.0f} s of staging the bundle")
            for k in wave:
                state, reason, detail = results[k]
                self.store.set_reader(self.id, k, state, reason=reason, detail=detail)
                self.say(f"  {k[0]}/{k[1]}: {state}" + (f" ({reason}): {detail}" if state == FAILED else ""))
                failures += state == FAILED
            if failures >= self.halt_on:
                halted_after = n
                break
        not_reached = [k for w in waves[halted_after:] for k in w] if halted_after is not None else []
        for k in not_reached:
            self.store.set_reader(self.id, k, NOT_REACHED, reason="halted", detail=f"the rollout halted after wave {halted_after}; nothing was sent")
        if halted_after is not None:
            state = "halted"
            detail = f"halted after wave {halted_after} of {len(waves)}: {failures} failure(s) reached --halt-on-failures {self.halt_on}"
        elif failures:
            state, detail = "done_with_failures", f"{failures} reader(s) did not commit {self.version}"
        else:
            state, detail = "done", f"every reader runs {self.version}"
        self.store.finish(self.id, state, detail)
        self.say(f"rollout {self.id}: {detail}")
        return self.store.status(self.id) | {"run": run, "failures_this_run": failures}
