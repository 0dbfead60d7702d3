"""The local single-node Kafka: KRaft, broker and controller in one JVM, on 127.0.0.1.

Lifecycle, each step idempotent::

    lib = ensure_jars(cache_dir())              # mvn, once per pom.xml version
    state = up(port=9092)                       # format (first time), start, wait ready
    print(state.bootstrap)
    down()                                      # SIGTERM, then SIGKILL after a timeout

``up`` returns the running broker when the state folder already describes a
live, healthy one. The data folder survives ``down`` (topics and offsets are
kept) unless ``purge=True``.

Files, under the cache folder (``$RESON8_KAFKA_CACHE``, else ``<repo>/.cache/kafka``):

- ``lib/``: the broker's jars, copied there by Maven from ``topology/kafka/pom.xml``;
  ``lib/.pom-sha256`` records which pom they came from.
- ``run/`` (the state folder; overridable per call): ``broker.json`` (pid,
  ports, paths), ``server.properties``, ``log4j2.properties``, ``data/``,
  ``logs/server.log`` (the broker's log), ``logs/kafka.out`` (JVM stdout/stderr).

Nothing here imports aiokafka at module level; readiness imports it lazily.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workers.errors import ConfigError, KafkaUnavailable

CACHE_ENV = "RESON8_KAFKA_CACHE"
POM = Path(__file__).with_name("kafka") / "pom.xml"
DEFAULT_PORT = 9092
HEAP_OPTS = ("-Xms256m", "-Xmx512m")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
# Identifies our JVM in /proc/<pid>/cmdline, so a recycled pid is never signalled.
MAIN_CLASS = "kafka.Kafka"
STATE_FILE = "broker.json"


# --- paths and jars -------------------------------------------------------------


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """``$RESON8_KAFKA_CACHE``, else ``<repo>/.cache/kafka``; not created here."""
    override = os.environ.get(CACHE_ENV, "").strip()
    if override:
        return Path(override).expanduser().resolve()
    return _repo_root() / ".cache" / "kafka"


def default_state_dir() -> Path:
    """Where ``up``/``down``/``status`` keep the broker's pid, config and data."""
    return cache_dir() / "run"


def pom_digest(pom: Path = POM) -> str:
    """The cache key of the jar folder: a hash of the pom that produced it."""
    return hashlib.sha256(pom.read_bytes()).hexdigest()


def _require_tool(name: str, hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"{name} not found on PATH; {hint}")
    return found


def java_binary() -> str:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH; ConfigError if neither."""
    java_home = os.environ.get("JAVA_HOME", "").strip()
    if java_home and os.access(Path(java_home) / "bin" / "java", os.X_OK):
        return str(Path(java_home) / "bin" / "java")
    return _require_tool("java", "install Java 17+ (Kafka 4 needs it)")


def _jars_present(lib: Path, digest: str) -> bool:
    marker = lib / ".pom-sha256"
    if not marker.is_file() or marker.read_text().strip() != digest:
        return False
    return any(lib.glob("kafka_2.13-*.jar"))


def _run_maven(pom: Path, target: Path) -> None:
    mvn = _require_tool("mvn", "install Maven 3.8+ (it fetches the Kafka jars)")
    cmd = [
        mvn, "-q", "-B", "-f", str(pom),
        "dependency:copy-dependencies", f"-DoutputDirectory={target}",
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"mvn could not run: {exc}") from exc
    if done.returncode != 0:
        errors = [line for line in done.stdout.splitlines() if "[ERROR]" in line]
        first = errors[0] if errors else (done.stderr.strip().splitlines() or ["?"])[-1]
        raise ConfigError(f"mvn could not resolve the Kafka jars: {first.strip()}")


def ensure_jars(cache: Path | None = None, pom: Path = POM) -> Path:
    """Return the folder of the broker's jars, running Maven only when needed.

    The jars are reused while ``pom.xml`` is unchanged (its hash is stored
    next to them). Maven writes into a temporary folder that replaces
    ``lib/`` only when complete, so an interrupted run never leaves a
    half-filled cache. Raises ConfigError when mvn is missing or fails.
    """
    cache = cache_dir() if cache is None else cache
    lib = cache / "lib"
    digest = pom_digest(pom)
    if _jars_present(lib, digest):
        return lib
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / f"lib.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    _run_maven(pom, staging)
    (staging / ".pom-sha256").write_text(digest + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    return lib


# --- configuration ----------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    """The broker's ``server.properties``: one node, tuned for fast tests.

    Static voters (``controller.quorum.voters``) keep the controller port
    out of the metadata log, so a restart may pick another free port.
    """
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # One node: every internal topic must live with RF 1.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "5",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Tests join groups constantly; the default 3 s delay would dominate them.
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        # Topics come from `topics apply` or the test fixtures, never by accident.
        "auto.create.topics.enable": "false",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def log4j2_properties(log_file: Path) -> str:
    """Log4j2 configuration writing INFO and above to ``log_file``."""
    return (
        "status = warn\n"
        "appender.file.type = File\n"
        "appender.file.name = FILE\n"
        f"appender.file.fileName = {log_file}\n"
        "appender.file.layout.type = PatternLayout\n"
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = INFO\n"
        "rootLogger.appenderRef.file.ref = FILE\n"
        "logger.kafka.name = kafka\n"
        "logger.kafka.level = INFO\n"
        "logger.state.name = state.change.logger\n"
        "logger.state.level = WARN\n"
    )


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Same shape as ``Uuid.randomUuid()``, which also avoids a leading '-'
    (a CLI would read it as an option); this spares a JVM start.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not text.startswith("-"):
            return text


# --- state ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerState:
    """A broker this module started; persisted as ``broker.json`` in the state folder."""

    pid: int
    port: int
    controller_port: int
    state_dir: str
    data_dir: str
    log_file: str
    cluster_id: str
    started_at: float

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def read_state(state_dir: Path) -> BrokerState | None:
    """The recorded broker, or None when there is no (readable) record."""
    try:
        raw = json.loads((state_dir / STATE_FILE).read_text())
        return BrokerState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def _write_state(state: BrokerState) -> None:
    path = Path(state.state_dir) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)


def _pid_running(pid: int) -> bool:
    # Our own child stays a zombie until waited for; another process's is not ours to reap.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie (state Z, after the name in parentheses) has already exited.
    return status.rpartition(")")[2].split()[:1] != ["Z"]


def _is_our_jvm(pid: int, state_dir: Path) -> bool:
    # Right after posix_spawn the cmdline can still be empty (exec not done
    # yet), so this check is for records read from disk, not fresh children.
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    config = str(state_dir / "server.properties").encode()
    return MAIN_CLASS.encode() in argv and config in argv


def is_alive(state: BrokerState) -> bool:
    """Whether the recorded pid is still our Kafka JVM (not a recycled pid)."""
    return _pid_running(state.pid) and _is_our_jvm(state.pid, Path(state.state_dir))


# --- readiness -----------------------------------------------------------------------


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def probe(bootstrap: str, timeout_s: float = 5.0, **options: Any) -> dict[str, Any]:
    """One metadata request; return aiokafka's cluster description.

    ``options`` go to ``AIOKafkaAdminClient`` (TLS/SASL, see
    ``topology.connection.client_kwargs``). Raises KafkaUnavailable when the
    cluster does not answer in time or lists no broker; usable as a health check.
    """
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped,unused-ignore]
    from aiokafka.errors import KafkaError  # type: ignore[import-untyped,unused-ignore]

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), **options
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError) as exc:
        raise KafkaUnavailable(f"Kafka at {bootstrap} did not answer: {exc!r}") from exc
    finally:
        await admin.close()
    if not cluster.get("brokers"):
        raise KafkaUnavailable(f"Kafka at {bootstrap} lists no broker yet")
    return cluster


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def wait_ready(state: BrokerState, timeout_s: float = START_TIMEOUT_S) -> None:
    """Block until the broker answers a metadata request, polling up to ``timeout_s``.

    Raises KafkaUnavailable when the JVM exits (with the tail of its output)
    or the deadline passes. Call from synchronous code only (it runs its own
    event loop); async callers use :func:`probe`.
    """
    deadline = time.monotonic() + timeout_s
    out = Path(state.state_dir) / "logs" / "kafka.out"
    while True:
        if not _pid_running(state.pid):
            raise KafkaUnavailable(
                f"the Kafka JVM exited during start-up; see {state.log_file}: {_log_tail(out)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KafkaUnavailable(
                f"Kafka at {state.bootstrap} not ready after {timeout_s:.0f}s; see {state.log_file}"
            )
        # Connect first: a refused TCP connect is quiet, an aiokafka bootstrap logs errors.
        if _accepts(state.port):
            with contextlib.suppress(KafkaUnavailable):
                asyncio.run(probe(state.bootstrap, min(5.0, remaining)))
                return
        time.sleep(min(0.1, max(remaining, 0.0)))  # poll interval, bounded by the deadline


# --- start and stop ------------------------------------------------------------------


def _write_configs(state_dir: Path, port: int, controller_port: int) -> tuple[Path, Path, Path]:
    data_dir = state_dir / "data"
    logs = state_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    config = state_dir / "server.properties"
    config.write_text(server_properties(port, controller_port, data_dir))
    log_file = logs / "server.log"
    (state_dir / "log4j2.properties").write_text(log4j2_properties(log_file))
    return config, data_dir, log_file


def _java_command(java: str, lib: Path, state_dir: Path, *args: str) -> list[str]:
    return [
        java,
        *HEAP_OPTS,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={state_dir / 'log4j2.properties'}",
        "-cp",
        f"{lib}/*",
        *args,
    ]


def _cluster_id(data_dir: Path) -> str | None:
    with contextlib.suppress(OSError):
        for line in (data_dir / "meta.properties").read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.partition("=")[2].strip()
    return None


def format_storage(java: str, lib: Path, state_dir: Path, data_dir: Path) -> str:
    """Format ``data_dir`` for KRaft unless already formatted; return the cluster id."""
    existing = _cluster_id(data_dir)
    if existing is not None:
        return existing
    cluster_id = new_cluster_id()
    cmd = _java_command(
        java, lib, state_dir, "kafka.tools.StorageTool", "format",
        "-t", cluster_id, "-c", str(state_dir / "server.properties"),
    )  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["?"]
        raise KafkaUnavailable(f"formatting Kafka storage failed: {detail[0]}")
    return cluster_id


def _spawn(cmd: list[str], out: Path) -> int:
    # posix_spawn, not Popen: the broker must outlive `kafka up`, and an
    # abandoned Popen object warns "subprocess is still running" when collected.
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(out), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    # setsid: a Ctrl-C in the terminal that ran `kafka up` must not reach the broker.
    return os.posix_spawn(cmd[0], cmd, dict(os.environ), file_actions=actions, setsid=True)


def _running(state_dir: Path) -> BrokerState | None:
    state = read_state(state_dir)
    if state is not None and is_alive(state):
        return state
    return None


def up(
    port: int | None = DEFAULT_PORT,
    state_dir: Path | None = None,
    *,
    cache: Path | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> BrokerState:
    """Start the broker (or find it running) and return once it serves metadata.

    ``port=None`` picks a free port. If the state folder already records a
    live broker, that one is checked and returned, whatever ``port`` says.
    Raises ConfigError (no java/mvn, port taken) or KafkaUnavailable (the
    broker did not come up; the message names its log). The caller stops it
    with :func:`down`. Blocking (it runs a private event loop for the
    readiness probe): async code calls it through ``asyncio.to_thread``.
    """
    state_dir = default_state_dir() if state_dir is None else state_dir
    running = _running(state_dir)
    if running is not None:
        wait_ready(running, timeout_s)
        return running
    if port is not None and _port_in_use(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is in use; pass another --port")
    java = java_binary()
    lib = ensure_jars(cache)
    state_dir.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    controller_port = free_port()
    config, data_dir, log_file = _write_configs(state_dir, port, controller_port)
    cluster_id = format_storage(java, lib, state_dir, data_dir)
    pid = _spawn(
        _java_command(java, lib, state_dir, MAIN_CLASS, str(config)),
        log_file.with_name("kafka.out"),
    )
    state = BrokerState(
        pid, port, controller_port, str(state_dir), str(data_dir), str(log_file),
        cluster_id, time.time(),
    )  # fmt: skip
    _write_state(state)
    try:
        wait_ready(state, timeout_s)
    except KafkaUnavailable:
        _stop_pid(pid, STOP_TIMEOUT_S)
        raise
    return state


def _wait_exit(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _pid_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # poll interval while the JVM runs its shutdown hooks
    return True


def _stop_pid(pid: int, timeout_s: float) -> None:
    """Stop ``pid``, which the caller has verified to be our JVM."""
    # SIGTERM runs Kafka's shutdown hook: a clean shutdown skips log recovery next start.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if _wait_exit(pid, timeout_s):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_exit(pid, 5.0)


def down(
    state_dir: Path | None = None, *, timeout_s: float = STOP_TIMEOUT_S, purge: bool = False
) -> BrokerState | None:
    """Stop the recorded broker (SIGTERM, SIGKILL after ``timeout_s``).

    Returns the state it stopped, or None when nothing was running.
    ``purge`` also deletes the data folder (all topics). Safe to call twice.
    """
    state_dir = default_state_dir() if state_dir is None else state_dir
    state = read_state(state_dir)
    if state is not None and is_alive(state):
        _stop_pid(state.pid, timeout_s)
    if state is not None:
        (state_dir / STATE_FILE).unlink(missing_ok=True)
    if purge:
        shutil.rmtree(state_dir / "data", ignore_errors=True)
    return state


def status(state_dir: Path | None = None) -> BrokerState | None:
    """The running broker of ``state_dir``, or None (stale records are ignored)."""
    return _running(default_state_dir() if state_dir is None else state_dir)
