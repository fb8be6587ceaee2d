"""The README's "Run it" section works on a fresh clone: every shell command in it runs as written,
with `threadline` on the PATH, in the repository, each long-running one started and stopped by
pid. Ports and paths are moved only through flags the commands document (appended, so they win
over the README's), and `search`/`trace` find the store through `THREADLINE_API`.

The seed files it points at are in the repository (`examples/seed/`), byte for byte the seed's."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from harness import (
    LOOPBACK,
    REPO_ROOT,
    ManagedProcess,
    free_port,
    require_binary,
    wait_until,
)

README = REPO_ROOT / "README.md"
SEED_COPIES = REPO_ROOT / "examples" / "seed"
# Programs the section may use besides threadline, and why the test does not run them.
NOT_RUN = {
    "cargo": "installs or builds the binary, which the test puts on the PATH itself",
    "export": "puts the binary on the PATH, which the test does itself",
    "kubectl": "needs a Kubernetes cluster",
}
LONG_RUNNING = {"all-in-one", "demo", "collector", "store"}


def run_it_commands() -> list[list[str]]:
    """The commands of the sh blocks of "## Run it" (its ### subsections included), in order:
    continuation lines joined, comments dropped, each pipeline split into its commands."""
    text = README.read_text()
    start = text.index("## Run it\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                if "|" in words:
                    at = words.index("|")
                    commands.append(words[:at])
                    words = words[at + 1:]
                else:
                    commands.append(words)
                    words = []
    return commands


def test_the_readme_points_only_at_files_inside_the_repository():
    text = README.read_text()
    assert "../shared" not in text
    for path in re.findall(r"examples/seed/[\w.-]+", text):
        assert (REPO_ROOT / path).is_file(), path


def test_seed_copies_are_the_seed_byte_for_byte():
    shared = Path(os.environ.get("THREADLINE_SHARED_SEED_DIR", REPO_ROOT.parent / "shared" / "seed"))
    if not shared.is_dir():
        pytest.skip(f"{shared} is not there to compare with")
    copies = sorted(p.name for p in SEED_COPIES.iterdir())
    assert copies, "examples/seed is empty"
    for name in copies:
        assert (SEED_COPIES / name).read_bytes() == (shared / name).read_bytes(), name


def test_every_command_of_run_it_works_as_written(tmp_path):
    commands = run_it_commands()
    programs = {command[0] for command in commands}
    assert programs <= {"threadline", *NOT_RUN}, f"a command the test does not know: {programs}"
    assert sum(1 for c in commands if c[0] == "threadline") >= 10, commands

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "threadline").symlink_to(require_binary().resolve())
    grpc, http, api, health, metrics = (free_port() for _ in range(5))
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "THREADLINE_API": f"http://{LOOPBACK}:{api}",
    }
    assert shutil.which("threadline", path=env["PATH"]) == str(bin_dir / "threadline")

    def moved(command: list[str]) -> tuple[list[str], dict]:
        """The flags appended to `command` to move its ports and paths, and how to see it ready."""
        sub = command[1] if len(command) > 1 else ""
        if sub == "all-in-one":
            return [
                "--data", str(tmp_path / "all-in-one"),
                "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
                "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http}",
                "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
                "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
                "--set", "processors::tail_sampling::decision_wait=1s",
                "--store-set", f"server::http_listen_port={api}",
            ], {"ready_url": f"http://{LOOPBACK}:{api}/ready", "ready_ports": [grpc, http]}
        if sub == "demo":
            frontend = free_port()
            return ["--otlp-endpoint", f"http://{LOOPBACK}:{grpc}", "--listen", f"{LOOPBACK}:{frontend}"], {
                "ready_ports": [frontend]}
        if sub == "loadgen":
            return ["--endpoint", f"{LOOPBACK}:{grpc}"], {}
        if sub == "collector":
            c_grpc, c_http, c_metrics, upstream = free_port(), free_port(), free_port(), free_port()
            return [
                "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{c_grpc}",
                "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{c_http}",
                "--set", f"exporters::otlp::endpoint={LOOPBACK}:{upstream}",
                # The collector's own metrics default to localhost:8888.
                "--set", f"service::telemetry::metrics::address={LOOPBACK}:{c_metrics}",
            ], {"ready_ports": [c_grpc, c_http]}
        if sub == "store":
            s_api, s_grpc, s_http = free_port(), free_port(), free_port()
            return [
                "--set", f"storage::trace::local::path={tmp_path / 'store' / 'blocks'}",
                "--set", f"storage::trace::wal::path={tmp_path / 'store' / 'wal'}",
                "--set", f"server::http_listen_port={s_api}",
                "--set", f"distributor::receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{s_grpc}",
                "--set", f"distributor::receivers::otlp::protocols::http::endpoint={LOOPBACK}:{s_http}",
            ], {"ready_url": f"http://{LOOPBACK}:{s_api}/ready"}
        return [], {}

    started: list[ManagedProcess] = []
    listed_ids: list[str] = []
    ran = []
    try:
        for number, command in enumerate(commands):
            if command[0] != "threadline":
                continue
            extra, readiness = moved(command)
            sub = command[1]
            # `store convert` runs once and exits; `store` alone serves until stopped.
            if sub in LONG_RUNNING and command[2:3] != ["convert"]:
                process = ManagedProcess(f"readme-{number}-{sub}", command + extra, tmp_path / "logs",
                                         env=env, cwd=REPO_ROOT, **readiness)
                started.append(process)
                process.start(timeout=60)
                ran.append(sub)
                continue
            if "<trace-id>" in command:
                assert listed_ids, "`threadline trace <trace-id>` needs an id from the search before it"
                command = [listed_ids[0] if word == "<trace-id>" else word for word in command]
            argv = command + extra
            if sub == "search":
                # The demo's first error traces are stored once tail sampling has decided them.
                def found() -> bool:
                    result = _run(argv, env)
                    assert result.returncode == 0, result.stderr
                    listed_ids[:] = [line.split()[0] for line in result.stdout.splitlines()[1:]
                                     if re.match(r"^[0-9a-f]{32}\s", line)]
                    return bool(listed_ids)
                wait_until(found, 60, lambda: f"`{shlex.join(command)}` listed nothing", interval=1.0)
            else:
                result = _run(argv, env)
                assert result.returncode == 0, f"`{shlex.join(argv)}` failed:\n{result.stdout}\n{result.stderr}"
                if sub == "trace":
                    assert result.stdout.startswith(f"trace {listed_ids[0]}"), result.stdout
                if sub == "components":
                    assert "store" in result.stdout, result.stdout
                if sub == "install" or sub == "operator":
                    assert "kind:" in result.stdout, result.stdout[:500]
            ran.append(sub)
        for process in started:
            assert process.is_running(), f"{process.name} stopped:\n{process.output(tail_lines=40)}"
    finally:
        for process in reversed(started):
            process.stop(timeout=20)
    assert {"all-in-one", "demo", "search", "trace", "loadgen", "collector", "validate", "components",
            "store", "install", "operator"} <= set(ran), ran


def _run(argv: list[str], env: dict):
    import subprocess

    full_env = {**os.environ, **env}
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
                          env=full_env, cwd=REPO_ROOT)
