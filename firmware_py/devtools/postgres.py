"""A throw-away PostgreSQL server for tests and benches (Debian's ``postgresql`` package).

``LocalPostgres().start()`` runs ``initdb`` in a fresh temporary directory and
``pg_ctl start`` on a free loopback port; :meth:`new_database` makes an empty
database per test.  PostgreSQL refuses to run as root, so under root the
server runs as the unprivileged ``nobody`` user, in a directory that user owns.
Tooling only: the backend never imports this.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from firmware_py.errors import KaoclockError


class PostgresMissing(KaoclockError):
    """PostgreSQL's server binaries are not installed."""


def find_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl: $PG_BINDIR, PATH, or Debian's /usr/lib/postgresql/<ver>/bin."""
    env = os.environ.get("PG_BINDIR")
    candidates = [Path(env)] if env else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)]
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """initdb + pg_ctl in a temporary directory; ``url`` of the ``postgres`` database, trust auth on loopback only."""

    USER = "kaoclock"

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise PostgresMissing("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql (device/bootstrap.sh --dev)")
        self.bindir = bindir
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="kaoclock-pg-"))
        self.data = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
            self._run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.root)}
        out = subprocess.run(args, cwd=self.root, env=env, capture_output=True, text=True, timeout=120, **self._run_as)
        if check and out.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise KaoclockError(f"{Path(args[0]).name} failed ({out.returncode}): {out.stderr.strip()} {log.strip()}")
        return out

    def start(self) -> LocalPostgres:
        if not self.data.exists():
            self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.USER, "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync")
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c max_connections=200"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-o", opts, "-w", "-t", "60", "start")
        self.started = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)
            self.started = False

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{name}"

    def set_read_only(self, url: str, read_only: bool) -> None:
        """Make new transactions of ``url``'s database read-only (or writable again); existing sessions are ended."""
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = {'on' if read_only else 'off'}")
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def database_or_throwaway(url: str | None) -> tuple[str, LocalPostgres | None]:
    """``url`` when given, else a new database on a throw-away server (returned too, for the caller to stop)."""
    if url:
        return url, None
    pg = LocalPostgres().start()
    return pg.new_database(), pg
