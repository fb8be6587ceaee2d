"""Fixtures of the end-to-end suite: a Python OTLP backend and collector processes.

Every process a test starts is stopped at teardown (by pid: SIGTERM, then SIGKILL). When a test
fails, the output of the processes it started is attached to its report.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Collector, ManagedProcess, OtlpBackend, StoreServer  # noqa: E402

_PROCESSES_ATTR = "_e2e_processes"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for process in getattr(item, _PROCESSES_ATTR, []):
            report.sections.append(
                (f"process {process.name} output", process.output(tail_lines=200) or "(none)")
            )


def _track(request, process: ManagedProcess) -> None:
    processes = getattr(request.node, _PROCESSES_ATTR, None)
    if processes is None:
        processes = []
        setattr(request.node, _PROCESSES_ATTR, processes)
    processes.append(process)


@pytest.fixture
def backend():
    """A running OTLP/gRPC backend on a free port; stopped at teardown."""
    server = OtlpBackend().start()
    yield server
    server.stop()


@pytest.fixture
def process_factory(request, tmp_path):
    """Creates `ManagedProcess`es (not started) whose output lands in tmp_path; stops them all."""
    created: list[ManagedProcess] = []

    def make(name: str, argv, **kwargs) -> ManagedProcess:
        process = ManagedProcess(name, argv, tmp_path / "logs", **kwargs)
        created.append(process)
        _track(request, process)
        return process

    yield make
    for process in created:
        process.stop(timeout=15)


@pytest.fixture
def collector_factory(request, tmp_path):
    """Creates `Collector`s (the seed agent config, redirected to 127.0.0.1) and, unless
    `start=False`, starts them and waits until health_check answers 200 and the ports accept.
    Every one is stopped at teardown."""
    created: list[Collector] = []

    def make(backend: OtlpBackend | None = None, *, start: bool = True, **kwargs) -> Collector:
        if "exporter_endpoint" not in kwargs:
            assert backend is not None, "give a backend or an exporter_endpoint"
            kwargs["exporter_endpoint"] = backend.endpoint
        name = kwargs.pop("name", f"collector{len(created) + 1}")
        collector = Collector(tmp_path / "logs", name=name, **kwargs)
        created.append(collector)
        _track(request, collector)
        if start:
            collector.start()
        return collector

    yield make
    for collector in created:
        collector.stop(timeout=15)


@pytest.fixture
def store_factory(request, tmp_path):
    """Creates and starts `threadline store` processes (data under tmp_path unless given); stops
    them all at teardown."""
    created: list[StoreServer] = []

    def make(*, sets=(), name=None, data_dir=None, start=True) -> StoreServer:
        name = name or f"store{len(created) + 1}"
        store = StoreServer(tmp_path / "logs", data_dir or tmp_path / name, sets=sets, name=name)
        created.append(store)
        _track(request, store)
        if start:
            store.start()
        return store

    yield make
    for store in created:
        store.stop(timeout=15)
