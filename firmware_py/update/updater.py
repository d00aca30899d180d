"""The update sequence: verify, install into the inactive slot, switch, restart, check, commit or roll back.

Learned from RAUC ("interruptible at any point") and Mender (install, reboot,
verify, commit or roll back). Every step is recorded in the state file before
or after it happens, and the two slot links are replaced atomically, so a
process killed at any moment leaves one of these situations, each resolved by
:meth:`Updater.recover` (the unit's ``ExecStartPre``, run from the *committed*
slot so a broken new release cannot break its own judge):

=========================  ===================================================
what was interrupted       what the next start does
=========================  ===================================================
verifying the bundle       nothing had changed
installing / installed     ``current`` still is the committed slot: the
                           half-written slot is abandoned, the old one boots
trial, updater dead        count the start; run the new slot's health check;
                           pass: commit; fail, or more than
                           ``max_boot_attempts`` starts: roll back
trial, updater alive       nothing: the updater decides (it holds the lock)
committing                 ``committed`` already points at the new slot:
                           finish the commit
rolling back               ``current`` already points back: finish it
=========================  ===================================================

The health check always runs the *new* slot's own ``kaoclock health`` in its
own process (as the service user when run as root), so it proves that the new
code starts, reads the configuration, loads its models and reads frames.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware_py.errors import ExitCode
from firmware_py.fsutil import fsync_tree
from firmware_py.update.bundle import BundleManifest, Limits, copy_tree_files, extract_bundle, verify_bundle, version_tuple
from firmware_py.update.control import NoControl, ServiceControl
from firmware_py.update.crash import crashpoint
from firmware_py.update.errors import BundleError, UpdateError
from firmware_py.update.signing import TrustedKeys
from firmware_py.update.slots import SLOTS, SlotStore
from firmware_py.update.state import Pending, StateFile, UpdateState, is_alive, this_process
from firmware_py.update.venvs import VenvStore

if TYPE_CHECKING:
    from firmware_py.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Where the slots and the state live and how long a new release gets to prove itself."""

    slots_root: Path
    state_dir: Path
    public_key: Path
    config_path: Path | None = None
    health_deadline: float = 120.0
    max_boot_attempts: int = 3
    max_bundle_bytes: int = 512 << 20
    service_user: str = ""
    retry_interval: float = 2.0
    # An attempt started before the deadline may take this long, so a slow board is not cut short mid-check.
    min_attempt_seconds: float = 30.0

    @classmethod
    def from_config(cls, cfg: Config, config_path: Path | None) -> Settings:
        u = cfg.update
        return cls(
            slots_root=u.slots_root,
            state_dir=cfg.device.data_dir / "update",
            public_key=u.public_key,
            config_path=Path(config_path).resolve() if config_path else None,
            health_deadline=u.health_deadline,
            max_boot_attempts=u.max_boot_attempts,
            max_bundle_bytes=u.max_bundle_mb << 20,
            service_user=u.service_user,
        )


# ---------------------------------------------------------------- health


@dataclass
class HealthReport:
    """Result of one run of a slot's ``kaoclock health --json``."""

    ok: bool
    permanent: bool
    summary: str
    checks: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def failed(cls, summary: str, permanent: bool = False) -> HealthReport:
        return cls(False, permanent, summary)


class HealthRunner:
    """Runs a slot's health check in its own process, with a timeout."""

    def __init__(self, config_path: Path | None = None, user: str = "") -> None:
        self.config_path = config_path
        self.user = user

    def _identity(self) -> dict[str, Any]:
        if not self.user or os.geteuid() != 0:
            return {}
        try:
            pw = pwd.getpwnam(self.user)
        except KeyError:
            return {}
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": os.getgrouplist(self.user, pw.pw_gid)}

    def run(self, launcher: Path, timeout: float, on_started: Callable[[], None] | None = None) -> HealthReport:
        cmd = [str(launcher), "health", "--json"]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/", **self._identity())
        except OSError as exc:
            return HealthReport.failed(f"cannot start {launcher}: {exc.strerror}", permanent=True)
        if on_started is not None:
            on_started()
        try:
            out, err = proc.communicate(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return HealthReport.failed(f"health check did not finish within {timeout:.0f} s")
        try:
            doc = json.loads(out)
            checks = list(doc["checks"])
        except (ValueError, KeyError, TypeError):
            tail = " | ".join(err.strip().splitlines()[-3:]) or f"exit status {proc.returncode}"
            # The new release cannot even run its own health command: retrying will not help.
            return HealthReport.failed(f"the new release's `kaoclock health` did not run: {tail}", permanent=True)
        failed = [c for c in checks if c.get("status") == "fail"]
        summary = "; ".join(f"{c.get('name')}: {c.get('detail')}" for c in failed) or "all checks passed"
        return HealthReport(bool(doc.get("ok")) and not failed, any(c.get("permanent") for c in failed), summary, checks)


# ---------------------------------------------------------------- outcome


_SUCCESS = frozenset({"committed", "installed", "nothing", "repaired", "in-progress", "already-installed", "abandoned", "rolled-back-by-hand"})


@dataclass
class Outcome:
    """What an update command did, for the technician and for `--json`."""

    action: str
    slot: str | None = None
    version: str | None = None
    detail: str = ""
    health: HealthReport | None = None

    @property
    def exit_code(self) -> int:
        return ExitCode.OK if self.action in _SUCCESS else ExitCode.ROLLED_BACK

    def as_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k != "health"}
        if self.health is not None:
            doc["health"] = asdict(self.health)
        return doc


# ---------------------------------------------------------------- updater


class Updater:
    """Installs, switches, checks, commits and rolls back releases in A/B slots.

    ``control`` restarts the service (systemd, a command, or nothing);
    ``health`` runs a slot's health check; ``say`` receives progress lines.
    """

    def __init__(
        self,
        settings: Settings,
        control: ServiceControl | None = None,
        health: HealthRunner | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = SlotStore(settings.slots_root)
        self.statefile = StateFile(settings.state_dir)
        self.venvs = VenvStore(self.store.venvs_dir)
        self.control = control or NoControl()
        self.health = health or HealthRunner(settings.config_path, settings.service_user)
        self.say = say or log.info
        self._trusted: TrustedKeys | None = None

    @property
    def trusted(self) -> TrustedKeys:
        if self._trusted is None:
            self._trusted = TrustedKeys.load(self.settings.public_key)
        return self._trusted

    @property
    def limits(self) -> Limits:
        return Limits(max_bytes=self.settings.max_bundle_bytes)

    # -------------------------------------------------------- locking

    @contextlib.contextmanager
    def _exclusive(self, what: str) -> Iterator[None]:
        with self.statefile.locked(blocking=False) as got:
            if not got:
                st = self.statefile.load()
                who = f" (pid {st.pending.updater.get('pid')}, to {st.pending.version})" if st.pending and is_alive(st.pending.updater) else ""
                raise UpdateError(f"cannot {what}: another update is in progress{who}; wait for it, then see `kaoclock update --status`")
            yield

    # -------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        st = self.statefile.load()
        cur, com = self.store.current(), self.store.committed()
        slots = {}
        for s in SLOTS:
            meta = self.store.meta(s)
            slots[s] = {
                "installed": meta is not None,
                **({"version": meta.version, "installed_at": meta.installed, "source": meta.source, "venv": meta.venv_key} if meta else {}),
                **st.slots.get(s, {}),
                "current": s == cur,
                "committed": s == com,
            }
        pending = None
        if st.pending:
            pending = {**asdict(st.pending), "updater_alive": is_alive(st.pending.updater)}
        return {"slots_root": str(self.store.root), "current": cur, "committed": com, "slots": slots, "pending": pending, "history": st.history[-10:]}

    # -------------------------------------------------------- first install

    def init(self, source: Path, venv: Path | None = None) -> Outcome:
        """Install the first release into slot a (from a bundle, or unsigned from a checkout)."""
        with self._exclusive("install the first release"):
            cur, com = self.store.current(), self.store.committed()
            for slot in (com, cur):
                meta = self.store.meta(slot) if slot else None
                if slot and meta:
                    if com != slot:
                        self.store.set_committed(slot)  # a first install killed between its two links
                    return Outcome("already-installed", slot, meta.version, "use `kaoclock update BUNDLE` to change the release")
            source = Path(source)
            vb = None if source.is_dir() else verify_bundle(source, self.trusted, self.limits)  # before touching anything
            self.store.ensure_layout()
            self.store.unlink("current")  # links left by a first install killed before it completed
            self.store.unlink("committed")
            slot = "a"
            self.store.wipe(slot)
            target = self.store.path(slot)
            if vb is None:
                self.say(f"installing the checkout {source} into slot {slot} (unsigned)")
                manifest = copy_tree_files(source, target)
                raw, sig, sha, signer = manifest.to_bytes(), b"", "", "unsigned"
                wheels = None
            else:
                self.say(f"bundle {source.name}: release {vb.manifest.version}, signed by {vb.signer}, {len(vb.manifest.files)} files verified")
                extract_bundle(vb, target, self.trusted)
                manifest, raw, sig, sha, signer = vb.manifest, vb.manifest.raw, vb.signature, vb.sha256, vb.signer
                wheels = target / "wheels"
            key = self.venvs.adopt(venv, manifest.requirements) if venv is not None else self.venvs.ensure(manifest.requirements, wheels)
            self._finish_slot(slot, manifest, raw, sig, sha, signer, key)
            self.store.set_current(slot)
            self.store.set_committed(slot)
            st = self.statefile.load()
            st.pending = None
            st.slot_status(slot).update(status="good", reason=None, committed=_now())
            st.note("first-install", slot=slot, version=manifest.version, source=manifest.source)
            self.statefile.save(st)
            self.say(f"release {manifest.version} installed in slot {slot} and marked good")
            return Outcome("installed", slot, manifest.version)

    def _finish_slot(self, slot: str, manifest: BundleManifest, raw: bytes, sig: bytes, sha: str, signer: str, key: str) -> None:
        self.store.link_venv(slot, key)
        fsync_tree(self.store.path(slot))
        meta = {
            "version": manifest.version,
            "installed": _now(),
            "source": manifest.source,
            "bundle_sha256": sha,
            "signer": signer,
            "venv_key": key,
            "requirements": list(manifest.requirements),
        }
        self.store.write_meta(slot, meta, raw, sig)

    def _require_installed(self) -> tuple[str, str]:
        cur, com = self.store.current(), self.store.committed()
        if cur is None or com is None:
            raise UpdateError(f"no release is installed under {self.store.root}; install the first one with device/install.sh")
        return cur, com

    # -------------------------------------------------------- update

    def apply(self, bundle_path: Path, *, allow_downgrade: bool = False) -> Outcome:
        """The whole update: verify, install, switch, restart, check, commit or roll back."""
        with self._exclusive("start an update"):
            self._require_installed()
            st = self.statefile.load()
            if st.pending is not None:
                self.say(f"an interrupted update to {st.pending.version} was found; resolving it first")
                self._resolve(st, restart=True)
            cur, _com = self._require_installed()
            running = self.store.meta(cur)

            vb = verify_bundle(Path(bundle_path), self.trusted, self.limits)
            m = vb.manifest
            self.say(f"bundle {Path(bundle_path).name}: release {m.version}, signed by {vb.signer}, {len(m.files)} files verified")
            self._check_compatible(m, running.version if running else None, allow_downgrade)
            target = self.store.other(cur)
            plan = self.venvs.plan(m.requirements, m.has_wheels, running.requirements if running else None)

            st = self.statefile.load()
            st.pending = Pending(
                slot=target,
                version=m.version,
                from_slot=cur,
                from_version=running.version if running else None,
                phase="installing",
                started=time.time(),
                updater=this_process(),
                bundle_sha256=vb.sha256,
            )
            st.slot_status(target).update(status="installing", version=m.version, reason=None)
            st.note("install-start", slot=target, version=m.version, bundle_sha256=vb.sha256)
            self.statefile.save(st)
            crashpoint("install-start")
            try:
                self.store.wipe(target)
                self.say(f"installing {m.version} into slot {target} ({len(m.files)} files)")
                extract_bundle(vb, self.store.path(target), self.trusted, on_file=lambda i, n: crashpoint("copy", i, n))
                if plan == "build":
                    self.say("the release changes the Python dependencies: building its venv from the bundle's wheels")
                key = self.venvs.ensure(m.requirements, self.store.path(target) / "wheels")
                self._finish_slot(target, m, m.raw, vb.signature, vb.sha256, vb.signer, key)
            except BaseException as exc:
                if isinstance(exc, (BundleError, UpdateError, OSError, subprocess.SubprocessError)):
                    st.pending = None
                    st.slot_status(target).update(status="abandoned", reason=f"install failed: {exc}")
                    st.note("install-failed", slot=target, version=m.version, reason=str(exc))
                    self.statefile.save(st)
                raise
            st.pending.phase = "installed"
            st.slot_status(target)["status"] = "installed"
            self.statefile.save(st)
            crashpoint("after-copy")
            return self._trial(st, target)

    def _check_compatible(self, m: BundleManifest, running: str | None, allow_downgrade: bool) -> None:
        if running and version_tuple(m.version) < version_tuple(running) and not allow_downgrade:
            raise BundleError(
                f"bundle {m.version} is older than the running {running}; refused so an old, fixed flaw cannot be brought back. "
                "To go back on purpose use `kaoclock update --rollback`, or `--allow-downgrade`"
            )
        if running and m.min_from_version and version_tuple(running) < version_tuple(m.min_from_version):
            raise BundleError(
                f"release {m.version} installs only over {m.min_from_version} or newer (running {running}); install {m.min_from_version} first"
            )
        need = re.fullmatch(r"\s*>=\s*(\d+)\.(\d+)\s*", m.requires_python or "")
        if need and sys.version_info[:2] < (int(need.group(1)), int(need.group(2))):
            raise BundleError(f"release {m.version} needs Python {m.requires_python}; this reader runs {sys.version.split()[0]}")

    def _trial(self, st: UpdateState, target: str) -> Outcome:
        p = st.pending
        assert p is not None
        p.phase, p.boots = "trial", 0
        p.deadline = time.time() + self.settings.health_deadline
        self.statefile.save(st)
        crashpoint("before-switch")
        self.store.set_current(target)
        st.note("switched", slot=target, version=p.version)
        self.statefile.save(st)
        self.say(f"switched to slot {target} ({p.version}); restarting the service ({self.control.description})")
        crashpoint("after-switch")
        ok, detail = self.control.restart()
        crashpoint("after-restart")
        if not ok:
            report = HealthReport.failed(f"the service did not start: {detail}")
        else:
            report = self._await_health(target, p.deadline, check_service=True, crash_name="health")
        if report.ok:
            crashpoint("before-commit")
            self._commit(st, target, report)
            return Outcome("committed", target, p.version, "health check passed", report)
        self._rollback_trial(st, report.summary)
        ok, detail = self.control.restart()
        restarted = "" if ok else f" (and restarting the old release failed: {detail})"
        detail = f"release {p.version} failed its health check: {report.summary}{restarted}"
        return Outcome("rolled-back", self.store.current(), p.from_version, detail, report)

    def _await_health(self, slot: str, deadline: float, *, check_service: bool, crash_name: str) -> HealthReport:
        """Run the slot's health check until it passes, fails for good, or the deadline passes."""
        last = HealthReport.failed("the deadline passed before any health check ran")
        attempt = 0
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            attempt += 1
            svc_ok, svc_detail = self.control.running() if check_service else (None, "")
            if svc_ok is False:
                last = HealthReport.failed(f"service: {svc_detail}")
            else:
                self.say(f"health check of slot {slot}, attempt {attempt} ({remaining:.0f} s left)")
                timeout = max(remaining, self.settings.min_attempt_seconds)
                last = self.health.run(self.store.launcher(slot), timeout, on_started=lambda: crashpoint(crash_name))
                if last.ok or last.permanent:
                    return last
            self.say(f"  not healthy yet: {last.summary}")
            time.sleep(max(0.0, min(self.settings.retry_interval, deadline - time.time())))
        last.summary = f"{last.summary} (deadline of {self.settings.health_deadline:.0f} s passed)"
        return last

    def _commit(self, st: UpdateState, slot: str, report: HealthReport | None) -> None:
        version = st.pending.version if st.pending else "?"
        self.store.set_committed(slot)
        crashpoint("commit")
        st.pending = None
        st.slot_status(slot).update(status="good", reason=None, committed=_now())
        st.note("committed", slot=slot, version=version)
        self.statefile.save(st)
        keep = {m.venv_key for m in (self.store.meta(s) for s in SLOTS) if m is not None}
        removed = self.venvs.collect(keep)
        self.say(f"release {version} committed in slot {slot}" + (f"; removed unused venvs {', '.join(removed)}" if removed else ""))

    def _rollback_trial(self, st: UpdateState, reason: str) -> None:
        p = st.pending
        assert p is not None
        good = self.store.committed()
        if good is None:
            raise UpdateError("no committed release to roll back to")
        p.verdict = reason
        self.statefile.save(st)
        self.store.set_current(good)
        crashpoint("rollback")
        st.pending = None
        st.slot_status(p.slot).update(status="bad", reason=reason)
        st.note("rolled-back", slot=p.slot, version=p.version, to_slot=good, reason=reason)
        self.statefile.save(st)
        self.say(f"rolled back to slot {good} ({p.from_version}): {reason}")

    # -------------------------------------------------------- recovery

    def recover(self, *, restart: bool) -> Outcome:
        """Resolve an interrupted update (the unit's ExecStartPre runs this with restart=False)."""
        with self.statefile.locked(blocking=False) as got:
            if got:
                return self._resolve(self.statefile.load(), restart=restart)
        st = self.statefile.load()
        if st.pending and is_alive(st.pending.updater):
            pid = st.pending.updater.get("pid")
            self.say(f"update to {st.pending.version} in progress (pid {pid}); it decides commit or rollback")
            return Outcome("in-progress", st.pending.slot, st.pending.version)
        with self.statefile.locked(blocking=True, timeout=60.0) as got:
            if not got:
                raise UpdateError(f"the update lock {self.statefile.lock_path} stayed busy for 60 s; see `kaoclock update --status`")
            return self._resolve(self.statefile.load(), restart=restart)

    def _resolve(self, st: UpdateState, *, restart: bool) -> Outcome:
        cur, com = self.store.current(), self.store.committed()
        if com is None or self.store.meta(com) is None:
            if cur is not None and self.store.meta(cur) is not None and st.pending is None:
                self.store.set_committed(cur)  # links from an older layout: the running slot is the known one
                return Outcome("nothing", cur, None, "committed link restored")
            if cur is None and com is None:
                return Outcome("nothing", None, None, "no release installed")
            raise UpdateError(f"no intact committed release under {self.store.root}; reinstall with device/install.sh")
        outcome = self._decide(st, cur, com)
        if restart and outcome.action in ("committed", "rolled-back", "abandoned", "repaired"):
            ok, detail = self.control.restart()
            if not ok:
                outcome.detail += f" (restart failed: {detail})"
        return outcome

    def _decide(self, st: UpdateState, cur: str | None, com: str) -> Outcome:
        p = st.pending
        if p is None:
            if cur != com:
                self.store.set_current(com)
                st.note("repaired", detail=f"current pointed at uncommitted slot {cur}; reset to committed slot {com}")
                self.statefile.save(st)
                self.say(f"current pointed at uncommitted slot {cur}; back to committed slot {com}")
                return Outcome("repaired", com)
            return Outcome("nothing", com, None, "no update pending")
        if p.slot == com:
            # Killed after re-pointing `committed`: the commit decision was made; finish it.
            if cur != com:
                self.store.set_current(com)
            self._commit(st, com, None)
            return Outcome("committed", com, p.version, "an interrupted commit was finished")
        if p.verdict:
            # Killed while rolling back: the decision was made; finish it.
            self._rollback_trial(st, p.verdict)
            return Outcome("rolled-back", com, p.from_version, p.verdict)
        if p.phase != "trial" or cur != p.slot:
            if cur != com:
                self.store.set_current(com)
            where = "before the switch" if p.phase == "trial" else f"while {p.phase}"
            reason = f"update to {p.version} was interrupted {where}"
            st.slot_status(p.slot).update(status="abandoned", reason=reason)
            st.pending = None
            st.note("abandoned", slot=p.slot, version=p.version, reason=reason)
            self.statefile.save(st)
            self.say(f"{reason}; slot {com} ({p.from_version}) stays; run the update again")
            return Outcome("abandoned", com, p.from_version, reason)
        p.boots += 1
        self.statefile.save(st)
        if p.boots > self.settings.max_boot_attempts:
            reason = f"release {p.version} was started {p.boots - 1} time(s) without passing its health check"
            self._rollback_trial(st, reason)
            return Outcome("rolled-back", com, p.from_version, reason)
        self.say(f"release {p.version} in slot {p.slot} is on trial (start {p.boots} of {self.settings.max_boot_attempts}); checking its health")
        report = self._await_health(p.slot, time.time() + self.settings.health_deadline, check_service=False, crash_name="boot-health")
        if report.ok:
            self._commit(st, p.slot, report)
            return Outcome("committed", p.slot, p.version, "health check passed at start", report)
        self._rollback_trial(st, report.summary)
        return Outcome("rolled-back", com, p.from_version, f"release {p.version} failed its health check: {report.summary}", report)

    # -------------------------------------------------------- rollback by hand

    def rollback(self, *, force: bool = False) -> Outcome:
        """Go back to the other slot's release (or abort a release on trial)."""
        with self._exclusive("roll back"):
            cur, com = self._require_installed()
            st = self.statefile.load()
            p = st.pending
            if p is not None and p.phase == "trial" and cur == p.slot and cur != com:
                self._rollback_trial(st, "rolled back by hand during its trial")
                self.control.restart()
                return Outcome("rolled-back-by-hand", com, p.from_version, f"release {p.version} on trial was abandoned")
            if p is not None:
                self._decide(st, cur, com)
                st = self.statefile.load()
                cur = self.store.current() or com
            target = self.store.other(cur)
            meta = self.store.meta(target)
            if meta is None:
                raise UpdateError(f"slot {target} holds no complete release: there is nothing to roll back to")
            status = st.slots.get(target, {}).get("status")
            if status != "good" and not force:
                why = st.slots.get(target, {}).get("reason") or "it never passed a health check"
                raise UpdateError(
                    f"slot {target} ({meta.version}) is not a known-good release ({status or 'unknown'}: {why}); add --force to switch to it anyway"
                )
            problems = self.store.verify(target)
            if problems:
                raise UpdateError(f"slot {target} ({meta.version}) is damaged, refusing to switch to it: " + "; ".join(problems))
            running = self.store.meta(cur)
            self.store.set_current(target)
            self.store.set_committed(target)
            st.slot_status(target).update(status="good", reason=None, committed=_now())
            st.note("rollback-by-hand", slot=target, version=meta.version, from_slot=cur, from_version=running.version if running else None)
            self.statefile.save(st)
            self.say(f"switched back to slot {target} ({meta.version}); restarting the service ({self.control.description})")
            ok, detail = self.control.restart()
            report = self.health.run(self.store.launcher(target), self.settings.health_deadline)
            return Outcome("rolled-back-by-hand", target, meta.version, detail if not ok else "", report)

    # -------------------------------------------------------- bundles staged by the daemon

    def apply_staged(self, staging_dir: Path) -> Outcome:
        """Install the bundle the daemon staged (``kaoclock-update.service``), then delete it."""
        from firmware_py.update.staging import Staging

        bundle = Staging(staging_dir, self.settings.max_bundle_bytes).take_ready()
        if bundle is None:
            return Outcome("nothing", detail="no staged bundle")
        try:
            return self.apply(bundle)
        except (BundleError, UpdateError) as exc:
            # Nobody watches this unit's output: record the refusal for the daemon to report (update.failed).
            with self.statefile.locked(timeout=10.0):
                st = self.statefile.load()
                st.note("staged-refused", bundle=bundle.name, reason=str(exc))
                self.statefile.save(st)
            raise
        finally:
            bundle.unlink(missing_ok=True)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
