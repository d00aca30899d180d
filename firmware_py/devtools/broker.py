"""A local mosquitto for development, tests and benchmarks, with a throw-away PKI.

:class:`LocalBroker` writes a mosquitto configuration into a directory and
runs the real ``mosquitto`` binary on free loopback ports: a plain listener
and, given a :class:`DevPki`, a mutual-TLS listener whose clients are named
by their certificate's CN and held to an ACL.  Nothing here is used on a
reader; production brokers are configured from the examples in the tree's
``mqtt/mosquitto/`` folder.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware_py.errors import ExitCode, KaoclockError

MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto")


class BrokerError(KaoclockError):
    exit_code = ExitCode.UNAVAILABLE


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or a BrokerError saying how to install it."""
    for cand in (shutil.which("mosquitto"), *MOSQUITTO_CANDIDATES):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise BrokerError("mosquitto is not installed; install it with `sudo apt-get install mosquitto` (device/bootstrap.sh --dev does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- PKI


class DevPki:
    """A throw-away certificate authority with server and client certificates (EC P-256)."""

    def __init__(self, directory: Path, days: int = 2) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.days = days
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kaoclock dev CA")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self.dir / "ca.crt"
        self.ca_file.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool = False, issuer: DevPki | None = None) -> tuple[Path, Path]:
        """Certificate and key files for ``cn`` (a server cert also names localhost and 127.0.0.1)."""
        ca = issuer or self
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            )
        cert = builder.sign(ca.ca_key, hashes.SHA256())
        safe = cn.replace("/", "_")
        crt_path, key_path = self.dir / f"{safe}.crt", self.dir / f"{safe}.key"
        crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        key_path.chmod(0o600)
        return crt_path, key_path


# ---------------------------------------------------------------- broker


class LocalBroker:
    """A real mosquitto on loopback; ``start()``, ``stop()``, ``restart()`` (same ports, same state)."""

    def __init__(
        self,
        directory: Path,
        *,
        pki: DevPki | None = None,
        acl: str | None = None,
        persistence: bool = False,
        plain_acl: bool = False,
        extra: str = "",
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = find_mosquitto()
        self.port = free_port()
        self.tls_port = free_port() if pki is not None else None
        self.pki = pki
        self.acl_file = self.dir / "acl"
        self.persistence = persistence
        self.log_file = self.dir / "mosquitto.log"
        self.conf_file = self.dir / "mosquitto.conf"
        if acl is not None:
            self.acl_file.write_text(acl)
        lines = [
            "per_listener_settings true",
            f"user {pwd.getpwuid(os.getuid()).pw_name}",  # mosquitto started as root would switch to 'mosquitto'
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            "autosave_interval 0",
            "max_queued_messages 1000000",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %H:%M:%S",
            "",
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
        ]
        if plain_acl and acl is not None:
            lines.append(f"acl_file {self.acl_file}")
        if pki is not None:
            crt, key = pki.issue("localhost", server=True)
            lines += [
                "",
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {pki.ca_file}",
                f"certfile {crt}",
                f"keyfile {key}",
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
            ]
            if acl is not None:
                lines.append(f"acl_file {self.acl_file}")
        self.conf_file.write_text("\n".join(lines) + "\n" + extra)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise BrokerError("this broker has no TLS listener (give a DevPki)")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def start(self, timeout: float = 10.0) -> LocalBroker:
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._proc = subprocess.Popen([self.binary, "-c", str(self.conf_file)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        ports = [p for p in (self.port, self.tls_port) if p]
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode(errors="replace")
                log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
                raise BrokerError(f"mosquitto exited with {self._proc.returncode}: {err.strip()} {log.strip()}")
            if all(_accepts(p) for p in ports):
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not open ports {ports} within {timeout} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly (SIGTERM: with persistence on, mosquitto saves sessions and queued messages)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Capture:
    """A plain paho subscriber that records every message (topic, payload, retain) under ``topic_filter``."""

    def __init__(
        self, url: str, topic_filter: str = "kaoclock/#", *, tls: tuple[str, str, str] | None = None, protocol: int = 5, persistent: bool = False
    ) -> None:
        """``persistent``: keep a broker session (with a broker that has persistence, nothing published
        while this capture is disconnected, e.g. across a broker restart, is missed)."""
        import threading

        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        from firmware_py.mqtt.link import BrokerUrl

        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        u = BrokerUrl.parse(url)
        proto = MQTTProtocolVersion.MQTTv5 if protocol == 5 else MQTTProtocolVersion.MQTTv311
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"capture-{time.monotonic_ns()}", protocol=proto)
        self.client.reconnect_delay_set(0.05, 0.3)  # type: ignore[arg-type]  # paho takes float seconds; its stub says int
        props = None
        if persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        if tls:
            self.client.tls_set(ca_certs=tls[0], certfile=tls[1], keyfile=tls[2])
        subscribed = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic_filter, 1)
        if persistent:
            self.client.connect(u.host, u.port, clean_start=False, properties=props)
        else:
            self.client.connect(u.host, u.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise BrokerError(f"capture: no SUBACK from {url}")

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))  # type: ignore[attr-defined]
            self._cond.notify_all()

    def wait_for(self, predicate: object, timeout: float = 10.0) -> list[tuple[str, bytes, bool]]:
        """Wait until ``predicate(messages)`` is true; return the matching messages so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):  # type: ignore[operator]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"capture: condition not met within {timeout} s; got {[m[0] for m in self.messages][-20:]}")
                self._cond.wait(left)
            return list(self.messages)

    def on(self, channel: str) -> list[tuple[str, bytes, bool]]:
        with self._cond:
            return [m for m in self.messages if m[0].endswith("/" + channel)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
