"""Machinery shared by the end-to-end tests.

- `free_port()`: a TCP port on 127.0.0.1 that nothing listens on.
- `ManagedProcess` / `Collector`: start a process with its output in files, wait until it is ready,
  stop it by pid (SIGTERM, then SIGKILL after a timeout) or `kill9()` it.
- `OtlpBackend`: an independent OTLP/gRPC trace backend written with grpcio and the upstream
  `opentelemetry-proto` stubs. It keeps every span it receives (with its resource and scope), can be
  stopped and started again on the same port, and can answer UNAVAILABLE or slowly.
- `Metrics`: the Prometheus text format the collector serves at /metrics, parsed.
- `SdkSender` and `emit_rich_traces()`: the upstream OpenTelemetry Python SDK with its OTLP gRPC or
  HTTP exporter, producing spans with every kind of attribute, events, links, statuses and kinds.
- `assert_delivered_intact()`: compares what the SDK encoded with what the backend received.

Nothing here binds anything but 127.0.0.1.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import enum
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterable, Sequence

import grpc
from google.protobuf import text_format
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
MIB = 1024 * 1024


# ---------------------------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------------------------


def collector_binary() -> Path:
    """The `threadline` binary under test: $THREADLINE_BIN, else target/release/threadline."""
    path = Path(os.environ.get("THREADLINE_BIN", "target/release/threadline"))
    return path if path.is_absolute() else REPO_ROOT / path


def seed_dir() -> Path:
    """The seed configs: $THREADLINE_SEED_DIR, else the repository's copies in examples/seed
    (byte for byte those of ../shared/seed; test_readme_run_it.py checks it)."""
    configured = os.environ.get("THREADLINE_SEED_DIR")
    return Path(configured) if configured else REPO_ROOT / "examples" / "seed"


def seed_config(name: str = "agent-config.yaml") -> Path:
    path = seed_dir() / name
    if not path.is_file():
        raise FileNotFoundError(
            f"seed config {path} not found: examples/seed is missing from the checkout "
            "or THREADLINE_SEED_DIR points elsewhere"
        )
    return path


TESTDATA = Path(__file__).resolve().parent / "testdata"


# ---------------------------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------------------------

_ports_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago and that this run has not handed out yet."""
    with _ports_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = sock.getsockname()[1]
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError("no free port found on 127.0.0.1")


def wait_until(
    predicate: Callable[[], object],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.1,
):
    """Polls `predicate` until it returns something truthy (which is returned) or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:.0f}s: {text}")
        time.sleep(interval)


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status code of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def rss_mib(pid: int) -> float | None:
    """Resident set size of `pid` in MiB (VmRSS in /proc/<pid>/status), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


class RssSampler:
    """Samples a process's RSS every `interval` seconds on a thread until `stop()`."""

    def __init__(self, pid: int, interval: float = 0.1):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            value = rss_mib(self.pid)
            if value is not None:
                self.samples.append((time.monotonic() - started, value))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak_mib(self) -> float:
        return max((value for _, value in self.samples), default=0.0)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------

_live_processes: set["ManagedProcess"] = set()


@atexit.register
def _kill_leftover_processes() -> None:
    # Last resort if pytest itself dies: never leave a started process behind.
    for process in list(_live_processes):
        process.kill9()


class ManagedProcess:
    """A child process with stdout/stderr in files under `log_dir`, stopped by its own pid.

    Readiness: `ready_url` answering 200 and every port in `ready_ports` accepting connections.
    `start()` may be called again after the process ended (e.g. after `kill9()`); each run gets
    its own log files.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_dir: Path,
        *,
        ready_url: str | None = None,
        ready_ports: Iterable[int] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ):
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.log_dir = Path(log_dir)
        self.ready_url = ready_url
        self.ready_ports = list(ready_ports)
        self.env = env
        self.cwd = cwd
        self.runs = 0
        self.popen: subprocess.Popen | None = None
        self.log_files: list[tuple[Path, Path]] = []

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def start(self, wait_ready: bool = True, timeout: float = 30.0) -> "ManagedProcess":
        assert not self.is_running(), f"{self.name} is already running"
        self.runs += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stdout_path = self.log_dir / f"{self.name}.{self.runs}.stdout.log"
        stderr_path = self.log_dir / f"{self.name}.{self.runs}.stderr.log"
        self.log_files.append((stdout_path, stderr_path))
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        if self.env:
            env.update(self.env)
        with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env=env,
                cwd=self.cwd,
                # Its own session: a Ctrl-C meant for pytest does not reach it half-way through a
                # test; the fixtures stop it by pid.
                start_new_session=True,
            )
        _live_processes.add(self)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if not self.is_running():
                raise AssertionError(
                    f"{self.name} exited with code {self.popen.returncode} before it was ready:\n"
                    f"{self.output(tail_lines=60)}"
                )
            if self.ready_url is not None and http_status(self.ready_url) != 200:
                return False
            return all(port_accepts(port) for port in self.ready_ports)

        wait_until(
            ready,
            timeout,
            lambda: (
                f"{self.name} not ready ({self.ready_url}, ports {self.ready_ports}):\n"
                f"{self.output(tail_lines=60)}"
            ),
            interval=0.05,
        )

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the process has ended, or None if it still runs after `timeout`."""
        assert self.popen is not None
        try:
            code = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        _live_processes.discard(self)
        return code

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL if still running after `timeout`. Returns the exit code.

        `self.needed_sigkill` tells whether SIGTERM was not enough.
        """
        self.needed_sigkill = False
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.needed_sigkill = True
                self.popen.kill()
                self.popen.wait(timeout=10)
        _live_processes.discard(self)
        return self.popen.returncode

    def kill9(self) -> None:
        """SIGKILL: a crash, with no chance to flush or clean up."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        _live_processes.discard(self)

    def output(self, tail_lines: int | None = None) -> str:
        """stdout and stderr of every run, labelled; the last `tail_lines` of each if given."""
        parts = []
        for run, (stdout_path, stderr_path) in enumerate(self.log_files, start=1):
            for label, path in (("stdout", stdout_path), ("stderr", stderr_path)):
                try:
                    text = path.read_text(errors="replace")
                except OSError:
                    continue
                lines = text.splitlines()
                if tail_lines is not None and len(lines) > tail_lines:
                    lines = [f"... ({len(lines) - tail_lines} earlier lines in {path})"] + lines[
                        -tail_lines:
                    ]
                parts.append(f"--- {self.name} run {run} {label} ({path}) ---")
                parts.extend(lines)
        return "\n".join(parts)

    def stderr_text(self) -> str:
        """stderr of the latest run."""
        return self.log_files[-1][1].read_text(errors="replace") if self.log_files else ""

    def all_output_text(self) -> str:
        """stdout and stderr of the latest run, unlabelled."""
        if not self.log_files:
            return ""
        stdout_path, stderr_path = self.log_files[-1]
        return stdout_path.read_text(errors="replace") + stderr_path.read_text(errors="replace")


@dataclasses.dataclass
class CollectorPorts:
    grpc: int
    http: int
    metrics: int
    health: int

    @classmethod
    def allocate(cls) -> "CollectorPorts":
        return cls(free_port(), free_port(), free_port(), free_port())


class Collector(ManagedProcess):
    """`threadline collector` on the unchanged seed agent config, redirected with --set."""

    def __init__(
        self,
        log_dir: Path,
        *,
        exporter_endpoint: str | None,
        configs: Sequence[Path | str] = (),
        sets: Sequence[str] = (),
        extensions: Sequence[str] = (),
        ports: CollectorPorts | None = None,
        name: str = "collector",
        env: dict[str, str] | None = None,
    ):
        self.ports = ports or CollectorPorts.allocate()
        configs = list(configs) or [seed_config()]
        argv: list[str] = [str(require_binary()), "collector"]
        for config in configs:
            argv += ["--config", str(config)]
        p = self.ports
        for item in [
            f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{p.grpc}",
            f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{p.http}",
            *([f"exporters::otlp::endpoint={exporter_endpoint}"] if exporter_endpoint else []),
            f"service::telemetry::metrics::address={LOOPBACK}:{p.metrics}",
            f"extensions::health_check::endpoint={LOOPBACK}:{p.health}",
            f"service::extensions=[{','.join(['health_check', *extensions])}]",
            *sets,
        ]:
            argv += ["--set", item]
        super().__init__(
            name,
            argv,
            log_dir,
            ready_url=f"http://{LOOPBACK}:{p.health}/",
            ready_ports=[p.grpc, p.http, p.metrics],
            env=env,
            cwd=REPO_ROOT,
        )

    @property
    def grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.ports.grpc}"

    @property
    def http_base(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.http}"

    @property
    def traces_url(self) -> str:
        return f"{self.http_base}/v1/traces"

    def metrics(self) -> "Metrics":
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{self.ports.metrics}/metrics", timeout=5
        ) as response:
            return Metrics.parse(response.read().decode())


def require_binary() -> Path:
    binary = collector_binary()
    if not binary.is_file():
        raise AssertionError(
            f"collector binary {binary} not found: run `cargo build --release -p threadline` "
            "(or set THREADLINE_BIN)"
        )
    return binary


def run_threadline(args: Sequence[str], timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Runs a short-lived `threadline` command (e.g. `validate`) and captures its output."""
    return subprocess.run(
        [str(require_binary()), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


# ---------------------------------------------------------------------------------------------
# Prometheus text format
# ---------------------------------------------------------------------------------------------

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+-?\d+)?\s*$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclasses.dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float


class Metrics:
    """Samples of one scrape. Counter names match with or without the `_total` suffix."""

    def __init__(self, samples: list[Sample], text: str = ""):
        self.samples = samples
        self.text = text

    @classmethod
    def parse(cls, text: str) -> "Metrics":
        samples = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _SAMPLE.match(line)
            if match is None:
                raise ValueError(f"not a Prometheus sample line: {line!r}")
            labels = {
                key: bytes(value, "utf-8").decode("unicode_escape")
                for key, value in _LABEL.findall(match.group("labels") or "")
            }
            samples.append(Sample(match.group("name"), labels, float(match.group("value"))))
        return cls(samples, text)

    def matching(self, name: str, **labels: str) -> list[Sample]:
        names = {name, f"{name}_total"}
        return [
            s
            for s in self.samples
            if s.name in names and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def has(self, name: str) -> bool:
        return bool(self.matching(name))

    def value(self, name: str, **labels: str) -> float:
        """Sum of every sample of `name` with these labels; 0 when there is none."""
        return sum(s.value for s in self.matching(name, **labels))


# ---------------------------------------------------------------------------------------------
# The OTLP backend
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    resource: resource_pb2.Resource
    resource_schema_url: str
    scope: common_pb2.InstrumentationScope
    scope_schema_url: str
    span: trace_pb2.Span


def flatten_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    out = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    ReceivedSpan(
                        resource=resource_spans.resource,
                        resource_schema_url=resource_spans.schema_url,
                        scope=scope_spans.scope,
                        scope_schema_url=scope_spans.schema_url,
                        span=span,
                    )
                )
    return out


def service_name_of(resource: resource_pb2.Resource) -> str | None:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return None


class BackendMode(enum.Enum):
    ACCEPT = "accept"
    UNAVAILABLE = "unavailable"


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, backend: "OtlpBackend"):
        self.backend = backend

    def Export(self, request, context):  # noqa: N802 (gRPC method name)
        return self.backend._handle_export(request, context)


class OtlpBackend:
    """A real OTLP/gRPC trace backend on 127.0.0.1 that remembers every span it accepted.

    `discard_services`: spans whose resource has one of these `service.name`s are only counted
    (bulk load in overload tests), not kept.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        discard_services: Iterable[str] = (),
        workers: int = 16,
    ):
        self.port = port or free_port()
        self.discard_services = set(discard_services)
        self.workers = workers
        self.mode = BackendMode.ACCEPT
        self.delay_s = 0.0
        self._received: list[ReceivedSpan] = []
        self.discarded_spans = 0
        self.accepted_requests = 0
        self.refused_requests = 0
        self._cond = threading.Condition()
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> "OtlpBackend":
        assert self._server is None, "backend already running"
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="backend"),
            options=[
                # A collector's batches may be large; the backend must not be the bottleneck.
                ("grpc.max_receive_message_length", 512 * MIB),
                # Fail loudly if the port is taken instead of sharing it.
                ("grpc.so_reuseport", 0),
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        bound = server.add_insecure_port(self.endpoint)
        if bound != self.port:
            raise RuntimeError(f"backend cannot listen on {self.endpoint}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stops listening and aborts in-flight calls: the backend is down."""
        if self._server is not None:
            self._server.stop(grace=None).wait(10)
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def set_mode(self, mode: BackendMode, delay_s: float = 0.0) -> None:
        with self._cond:
            self.mode = mode
            self.delay_s = delay_s

    def _handle_export(self, request, context):
        with self._cond:
            mode, delay = self.mode, self.delay_s
        if mode is BackendMode.UNAVAILABLE:
            with self._cond:
                self.refused_requests += 1
            context.abort(grpc.StatusCode.UNAVAILABLE, "test backend is unavailable")
        if delay:
            time.sleep(delay)
        spans = flatten_request(request)
        kept = [s for s in spans if service_name_of(s.resource) not in self.discard_services]
        with self._cond:
            self._received.extend(kept)
            self.discarded_spans += len(spans) - len(kept)
            self.accepted_requests += 1
            self._cond.notify_all()
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._received)

    def span_count(self) -> int:
        with self._cond:
            return len(self._received)

    def span_id_counts(self) -> collections.Counter:
        with self._cond:
            return collections.Counter(s.span.span_id for s in self._received)

    def wait_for_span_ids(self, span_ids: Iterable[bytes], timeout: float) -> None:
        """Waits until every one of `span_ids` has been received."""
        wanted = set(span_ids)

        def missing() -> set[bytes]:
            return wanted - {s.span.span_id for s in self._received}

        deadline = time.monotonic() + timeout
        with self._cond:
            while missing():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"backend received {len(wanted) - len(missing())} of {len(wanted)} "
                        f"expected spans within {timeout:.0f}s"
                    )
                self._cond.wait(min(remaining, 0.5))

    def wait_for_count(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"backend received {len(self._received)} of {count} spans "
                        f"within {timeout:.0f}s"
                    )
                self._cond.wait(min(remaining, 0.5))


# ---------------------------------------------------------------------------------------------
# Raw OTLP clients and hand-made requests
# ---------------------------------------------------------------------------------------------


class RawGrpcClient:
    """Sends already-encoded ExportTraceServiceRequest bytes, so tests can send anything."""

    def __init__(self, endpoint: str):
        self.channel = grpc.insecure_channel(
            endpoint, options=[("grpc.max_send_message_length", -1)]
        )
        self._export = self.channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString,
        )

    def export_bytes(
        self, payload: bytes, timeout: float = 10.0, wait_for_ready: bool = False, metadata=None
    ):
        return self._export(
            payload, timeout=timeout, wait_for_ready=wait_for_ready, metadata=metadata
        )

    def export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        timeout: float = 10.0,
        wait_for_ready: bool = False,
        metadata=None,
    ):
        return self.export_bytes(
            request.SerializeToString(),
            timeout=timeout,
            wait_for_ready=wait_for_ready,
            metadata=metadata,
        )

    def close(self) -> None:
        self.channel.close()


def _random_nonzero(size: int) -> bytes:
    while True:
        value = os.urandom(size)
        if any(value):
            return value


def random_trace_id() -> bytes:
    return _random_nonzero(16)


def random_span_id() -> bytes:
    return _random_nonzero(8)


def make_request(
    spans: int,
    *,
    service: str = "e2e-raw",
    attribute_bytes: int = 0,
    trace_id: bytes | None = None,
) -> trace_service_pb2.ExportTraceServiceRequest:
    """One resource, one scope, `spans` spans with fresh ids; each carries a padding attribute of
    `attribute_bytes` bytes when asked (to make requests of a given size)."""
    now = time.time_ns()
    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = service
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "e2e.raw"
    scope_spans.scope.version = "1.0.0"
    padding = "x" * attribute_bytes
    for i in range(spans):
        span = scope_spans.spans.add()
        span.trace_id = trace_id or random_trace_id()
        span.span_id = random_span_id()
        span.name = f"raw-{i}"
        span.kind = trace_pb2.Span.SPAN_KIND_INTERNAL
        span.start_time_unix_nano = now - 1_000_000
        span.end_time_unix_nano = now
        span.attributes.add(key="index").value.int_value = i
        if padding:
            span.attributes.add(key="padding").value.string_value = padding
    return request


def span_ids_of(request: trace_service_pb2.ExportTraceServiceRequest) -> set[bytes]:
    return {s.span.span_id for s in flatten_request(request)}


# ---------------------------------------------------------------------------------------------
# The OpenTelemetry SDK as the sender
# ---------------------------------------------------------------------------------------------


class AckRecordingExporter(SpanExporter):
    """Wraps an exporter and records which spans it delivered (export() returned SUCCESS)."""

    def __init__(self, inner: SpanExporter):
        self.inner = inner
        self._lock = threading.Lock()
        self.acked: list[bytes] = []
        self.failed: list[bytes] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        ids = [s.context.span_id.to_bytes(8, "big") for s in spans]
        with self._lock:
            (self.acked if result is SpanExportResult.SUCCESS else self.failed).extend(ids)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class SdkSender:
    """A TracerProvider exporting over OTLP to `endpoint` (gRPC `host:port` or HTTP base URL).

    Every ended span is also recorded in memory, so `expected_request()` is exactly what the SDK's
    own encoder produced for the spans it exported.
    """

    def __init__(
        self,
        endpoint: str,
        protocol: str = "grpc",
        *,
        processor: str = "batch",
        resource_attributes: dict | None = None,
        timeout_s: float = 30.0,
        schedule_delay_ms: int = 200,
        max_export_batch_size: int = 512,
        headers: dict[str, str] | None = None,
    ):
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            otlp = GrpcExporter(endpoint=f"http://{endpoint}", insecure=True, timeout=timeout_s, headers=headers)
        elif protocol == "http":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            otlp = HttpExporter(endpoint=f"{endpoint}/v1/traces", timeout=timeout_s, headers=headers)
        else:
            raise ValueError(f"protocol must be grpc or http, not {protocol!r}")
        attributes = {"service.name": "e2e-checkout", **(resource_attributes or {})}
        self.provider = TracerProvider(resource=Resource.create(attributes))
        self.memory = InMemorySpanExporter()
        self.exporter = AckRecordingExporter(otlp)
        # Recorded first, so the expectation exists even for a span whose export fails.
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        if processor == "batch":
            self.provider.add_span_processor(
                BatchSpanProcessor(
                    self.exporter,
                    schedule_delay_millis=schedule_delay_ms,
                    max_export_batch_size=max_export_batch_size,
                    max_queue_size=100_000,
                    export_timeout_millis=int(timeout_s * 1000),
                )
            )
        elif processor == "simple":
            self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        else:
            raise ValueError(f"processor must be batch or simple, not {processor!r}")

    def tracer(self, name: str = "e2e.checkout", version: str = "1.4.2", **kwargs):
        return self.provider.get_tracer(name, version, **kwargs)

    def finish(self, timeout_s: float = 60.0) -> None:
        assert self.provider.force_flush(int(timeout_s * 1000)), "SDK force_flush timed out"
        self.provider.shutdown()

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.memory.get_finished_spans())

    def expected_request(self) -> trace_service_pb2.ExportTraceServiceRequest:
        return encode_spans(self.finished_spans())

    def sent_span_ids(self) -> set[bytes]:
        return {s.context.span_id.to_bytes(8, "big") for s in self.finished_spans()}


# Attribute values of every type an SDK can set, with edge values.
EVERY_ATTRIBUTE_TYPE = {
    "str": "checkout ✓ ünïcode",
    "str.empty": "",
    "bool.true": True,
    "bool.false": False,
    "int": 42,
    "int.negative": -7,
    "int.max": 2**63 - 1,
    "int.min": -(2**63),
    "float": 3.25,
    "float.negative": -0.5,
    "float.huge": 1e308,
    "list.str": ["a", "b", ""],
    "list.bool": [True, False, True],
    "list.int": [1, -2, 2**62],
    "list.float": [0.5, -1.25, 1e-9],
}


def emit_rich_traces(sender: SdkSender, traces: int = 3) -> None:
    """Spans covering what OTLP can carry: all attribute types, events, links, every kind,
    OK/ERROR statuses with a message, explicit times, a remote parent with trace state, two
    instrumentation scopes (one with schema URL and attributes), parent/child relations."""
    checkout = sender.tracer(
        "e2e.checkout",
        "1.4.2",
        schema_url="https://opentelemetry.io/schemas/1.26.0",
        attributes={"scope.team": "payments", "scope.tier": 1},
    )
    db = sender.tracer("e2e.db-driver", "0.9.0")
    for i in range(traces):
        remote_parent = trace_api.set_span_in_context(
            trace_api.NonRecordingSpan(
                trace_api.SpanContext(
                    trace_id=int.from_bytes(random_trace_id(), "big"),
                    span_id=int.from_bytes(random_span_id(), "big"),
                    is_remote=True,
                    trace_flags=trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED),
                    trace_state=trace_api.TraceState([("vendor", f"v{i}"), ("other", "x")]),
                )
            )
        )
        with checkout.start_as_current_span(
            "GET /checkout",
            context=remote_parent,
            kind=SpanKind.SERVER,
            attributes={**EVERY_ATTRIBUTE_TYPE, "iteration": i},
        ) as root:
            root.add_event(
                "request.received",
                {"bytes": 512, "ok": True, "ratio": 0.25, "tags": ["a", "b"], "who": "edge"},
            )
            root.add_event("no.attributes")
            with checkout.start_as_current_span("validate cart", kind=SpanKind.INTERNAL) as span:
                span.set_attribute("cart.items", [1, 2, 3])
                span.set_status(Status(StatusCode.OK))
            with db.start_as_current_span(
                "SELECT orders",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql", "db.rows": 0, "db.retry": False},
            ) as span:
                span.record_exception(ValueError("deadlock detected"))
                span.set_status(Status(StatusCode.ERROR, "deadlock detected"))
            producer = checkout.start_span("publish order", kind=SpanKind.PRODUCER)
            producer.end()
            start = time.time_ns() - 5_000_000
            consumer = checkout.start_span(
                "consume order",
                kind=SpanKind.CONSUMER,
                links=[
                    Link(producer.get_span_context(), {"link.reason": "follows", "n": 1}),
                    Link(root.get_span_context()),
                ],
                start_time=start,
            )
            consumer.set_attribute("messaging.batch", [True, False])
            consumer.end(end_time=start + 1_234_567)


def _attribute_kinds(attributes) -> set[str]:
    kinds = set()
    for kv in attributes:
        kind = kv.value.WhichOneof("value")
        kinds.add(kind)
        if kind == "array_value":
            for item in kv.value.array_value.values:
                kinds.add(f"array_of_{item.WhichOneof('value')}")
    return kinds


def _describe(message) -> str:
    return text_format.MessageToString(message, as_utf8=True)


def assert_delivered_intact(
    expected: trace_service_pb2.ExportTraceServiceRequest,
    received: list[ReceivedSpan],
) -> None:
    """Every expected span was received exactly once, byte-for-byte equal as a protobuf message,
    with an equal resource (schema URL included) and scope; nothing else was received."""
    wanted = {s.span.span_id: s for s in flatten_request(expected)}
    assert wanted, "nothing was expected: the test produced no spans"
    counts = collections.Counter(s.span.span_id for s in received)
    duplicated = {sid.hex(): n for sid, n in counts.items() if n > 1}
    assert not duplicated, f"spans received more than once: {duplicated}"
    missing = set(wanted) - set(counts)
    unexpected = set(counts) - set(wanted)
    assert not missing, f"{len(missing)} of {len(wanted)} spans never arrived"
    assert not unexpected, f"{len(unexpected)} spans arrived that were never sent"
    for got in received:
        want = wanted[got.span.span_id]
        name = f"span {got.span.name!r} ({got.span.span_id.hex()})"
        assert got.span == want.span, (
            f"{name} changed in transit.\nsent:\n{_describe(want.span)}\n"
            f"received:\n{_describe(got.span)}"
        )
        assert got.resource == want.resource, (
            f"{name}: resource changed.\nsent:\n{_describe(want.resource)}\n"
            f"received:\n{_describe(got.resource)}"
        )
        assert got.resource_schema_url == want.resource_schema_url, f"{name}: resource schema URL"
        assert got.scope == want.scope, (
            f"{name}: scope changed.\nsent:\n{_describe(want.scope)}\n"
            f"received:\n{_describe(got.scope)}"
        )
        assert got.scope_schema_url == want.scope_schema_url, f"{name}: scope schema URL"


def assert_rich_content(expected: trace_service_pb2.ExportTraceServiceRequest) -> None:
    """Guards the test data itself: what was sent really covers what the tests claim."""
    spans = flatten_request(expected)
    span_kinds = {s.span.kind for s in spans}
    assert span_kinds >= {
        trace_pb2.Span.SPAN_KIND_SERVER,
        trace_pb2.Span.SPAN_KIND_CLIENT,
        trace_pb2.Span.SPAN_KIND_INTERNAL,
        trace_pb2.Span.SPAN_KIND_PRODUCER,
        trace_pb2.Span.SPAN_KIND_CONSUMER,
    }
    kinds = set().union(*(_attribute_kinds(s.span.attributes) for s in spans))
    assert kinds >= {
        "string_value",
        "bool_value",
        "int_value",
        "double_value",
        "array_value",
        "array_of_string_value",
        "array_of_bool_value",
        "array_of_int_value",
        "array_of_double_value",
    }, kinds
    assert any(s.span.events for s in spans) and any(s.span.links for s in spans)
    assert any(s.span.links and s.span.links[0].attributes for s in spans)
    codes = {s.span.status.code for s in spans}
    assert trace_pb2.Status.STATUS_CODE_ERROR in codes and trace_pb2.Status.STATUS_CODE_OK in codes
    assert any(s.span.status.message for s in spans)
    assert any(s.span.parent_span_id for s in spans) and any(s.span.trace_state for s in spans)
    assert len({(s.scope.name, s.scope.version) for s in spans}) >= 2
    assert any(s.scope_schema_url and s.scope.attributes for s in spans)
    assert any(kv.key == "service.name" for s in spans for kv in s.resource.attributes)


class StoreServer(ManagedProcess):
    """`threadline store` on free 127.0.0.1 ports, data under `data_dir`."""

    def __init__(self, log_dir: Path, data_dir: Path, *, sets: Sequence[str] = (), name: str = "store"):
        self.http_port, self.grpc_port, self.otlp_http_port = free_port(), free_port(), free_port()
        self.data_dir = Path(data_dir)
        argv = [str(require_binary()), "store"]
        for item in [
            f"server::http_listen_port={self.http_port}",
            f"distributor::receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{self.grpc_port}",
            f"distributor::receivers::otlp::protocols::http::endpoint={LOOPBACK}:{self.otlp_http_port}",
            f"storage::trace::wal::path={self.data_dir / 'wal'}",
            f"storage::trace::local::path={self.data_dir / 'blocks'}",
            *sets,
        ]:
            argv += ["--set", item]
        super().__init__(
            name,
            argv,
            log_dir,
            ready_url=f"http://{LOOPBACK}:{self.http_port}/ready",
            cwd=REPO_ROOT,
        )

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def grpc_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    def get(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """GET on the API: (status, body), 4xx/5xx included."""
        return self.get_with_headers(path, headers, timeout)[:2]

    def get_with_headers(
        self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes, dict[str, str]]:
        """GET on the API: (status, body, response headers with lower-case names), 4xx/5xx included."""
        request = urllib.request.Request(self.api + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), {k.lower(): v for k, v in response.headers.items()}
        except urllib.error.HTTPError as err:
            return err.code, err.read(), {k.lower(): v for k, v in err.headers.items()}

    def json(self, path: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
        status, body = self.get(path, headers, timeout)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)
