"""A real Mosquitto broker on a free loopback port, for tests, examples and benchmarks.

``MosquittoBroker`` writes a config into its own folder (persistence on, so a stopped and
restarted broker keeps its sessions and queued QoS 1 messages), starts ``mosquitto -c`` as a
child process, and can stop (SIGTERM: the broker saves its state), kill (SIGKILL) and restart
it on the same port. As root Mosquitto would drop to user ``mosquitto``; the config says
``user root`` so the folder it writes needs no special owner.

Two stalled servers for fault tests: :class:`SilentBroker` (CONNACK, then never a PUBACK) and
:class:`SilentEndpoint` (an HTTP endpoint that accepts connections and never answers).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = [
    "BrokerError",
    "MosquittoBroker",
    "MosquittoMissingError",
    "SilentBroker",
    "SilentEndpoint",
    "Subscriber",
    "free_port",
    "mosquitto_executable",
]


class BrokerError(RuntimeError):
    """Mosquitto did not start (its log is quoted), or is not installed."""


class MosquittoMissingError(BrokerError):
    """The ``mosquitto`` binary is not installed (the only reason a test may skip)."""


def mosquitto_executable() -> str | None:
    """Path of the ``mosquitto`` binary (``PATH``, then ``/usr/sbin``), or None."""
    found = shutil.which("mosquitto")
    if found is None and Path("/usr/sbin/mosquitto").exists():
        found = "/usr/sbin/mosquitto"
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MosquittoBroker:
    """A Mosquitto child process on ``host:port`` (a free port by default).

    Use as a context manager or call :meth:`start` / :meth:`stop`. ``folder`` (default: a new
    temporary folder, removed by :meth:`cleanup`) holds ``mosquitto.conf``, the persistence
    file and ``mosquitto.log``. ``extra_config`` lines are appended to the config.
    ``users`` (user name -> password): anonymous clients are refused and only these log in
    (a ``passwd`` file in Mosquitto 2's ``$7$`` format); ``acl``: the text of an ACL file
    (``user NAME`` / ``topic read|write|readwrite PATTERN`` lines).
    """

    def __init__(
        self,
        folder: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        extra_config: str = "",
        users: dict[str, str] | None = None,
        acl: str | None = None,
    ) -> None:
        executable = mosquitto_executable()
        if executable is None:
            raise MosquittoMissingError("mosquitto is not installed: apt-get install mosquitto")
        self.executable = executable
        self._own_folder = folder is None
        self.folder = Path(folder or tempfile.mkdtemp(prefix="fieldstation-mosquitto-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port(host)
        self.extra_config = extra_config
        self.users = dict(users) if users is not None else None
        self.acl = acl
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.folder / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.folder / "mosquitto.log"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.users is not None else 'true'}",
            "persistence true",
            f"persistence_location {self.folder}/",
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 0",
            "max_inflight_messages 0",
        ]
        if self.users is not None:
            from fieldstation.hub.broker import mosquitto_hash

            passwd = self.folder / "passwd"
            passwd.write_text(
                "".join(f"{user}:{mosquitto_hash(pw)}\n" for user, pw in self.users.items())
            )
            passwd.chmod(0o600)
            lines.append(f"password_file {passwd}")
        if self.acl is not None:
            acl = self.folder / "acl"
            acl.write_text(self.acl + "\n")
            lines.append(f"acl_file {acl}")
        if os.geteuid() == 0:
            lines.append("user root")
        self.config_file.write_text("\n".join(lines) + "\n" + self.extra_config + "\n")

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Start the broker and wait until it accepts connections (raises BrokerError)."""
        if self.running:
            return self
        try:  # something else listening there would answer the readiness probe below
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, self.port))
        except OSError as error:
            raise BrokerError(
                f"mosquitto did not start: {self.host}:{self.port} is not free ({error})"
            ) from None
        self._write_config()
        self.process = subprocess.Popen(
            [self.executable, "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
                if self.process.poll() is None:
                    return self
                break
            except OSError:
                time.sleep(0.02)
        stderr = b""
        if self.process.poll() is not None and self.process.stderr:
            stderr = self.process.stderr.read()
        self.kill()
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        raise BrokerError(
            f"mosquitto did not start on {self.host}:{self.port}: "
            f"{stderr.decode(errors='replace')}{log[-2000:]}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM; the broker saves sessions and queued messages)."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL; unsaved broker state is lost)."""
        self._signal(signal.SIGKILL, 10.0)

    def _signal(self, signum: int, timeout: float) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> MosquittoBroker:
        """Stop gracefully and start again on the same port."""
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        """Stop and remove the folder when this object created it."""
        self.kill()
        if self._own_folder:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class Subscriber:
    """A real paho subscriber (QoS 1, persistent session) that records what arrives.

    The session survives broker restarts (``clean_session=False`` on MQTT 3.1.1 and a
    persistent broker), so QoS 1 messages queued while it was disconnected still arrive.
    ``ids`` counts each envelope ``id`` received (a count above 1 is a duplicate);
    ``retained`` maps topics to the last payload (text) seen on them, for status topics.
    ``username`` / ``password``: log in (a broker with ``users``).
    """

    def __init__(
        self,
        host: str,
        port: int,
        topic: str,
        client_id: str = "test-subscriber",
        *,
        username: str | None = None,
        password: str | None = None,
    ):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.ids: Counter[str] = Counter()
        self.payloads: dict[str, list[str]] = {}
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.topic = topic
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 2)
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        text = message.payload.decode(errors="replace")
        with self._changed:
            self.payloads.setdefault(message.topic, []).append(text)
            if text.startswith("{"):
                self.ids[json.loads(text)["id"]] += 1
            self._changed.notify_all()

    def wait_for(self, predicate: Any, timeout: float) -> bool:
        """Wait until ``predicate(self)`` is true (checked on each message) or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    @property
    def duplicates(self) -> int:
        """Messages received more than once (extra copies)."""
        with self._lock:
            return sum(n - 1 for n in self.ids.values())

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


class SilentBroker:
    """A TCP server that speaks just enough MQTT 3.1.1 to accept a connection (CONNACK) and
    then swallows every PUBLISH without a PUBACK (a half-dead broker). ``received`` counts the
    publishes seen (by their ``fieldstation/`` topics). :meth:`close` stops it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.received = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.settimeout(0.2)
            first = True
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not data:
                    break
                if first:
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                    first = False
                self.received += data.count(b"fieldstation/")
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


class SilentEndpoint:
    """A TCP server on a free loopback port that accepts every connection, reads what the
    client sends and never answers (an HTTP endpoint that hangs). ``url`` is an ``http://``
    URL to it; ``requests`` counts connections that sent something. :meth:`close` drops every
    connection (the client sees the peer go away) and stops listening."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/ingest"
        self.requests = 0
        self.asked = threading.Event()
        """Set once a client has sent a request (and is now waiting for the answer)."""
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    def _swallow(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        seen = False
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if not seen:
                seen = True
                with self._lock:
                    self.requests += 1
                self.asked.set()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self.sock.close()
