"""`validate`, `components`, `collector` and `all-in-one` know the same component types: the
binary's one registry, the `store` exporter included, so a config is accepted or refused alike."""

from __future__ import annotations

from harness import LOOPBACK, REPO_ROOT, free_port, run_threadline

ALL_IN_ONE_DEFAULT = REPO_ROOT / "crates" / "cli" / "src" / "defaults" / "all-in-one.yaml"


def _components() -> dict[str, list[str]]:
    result = run_threadline(["components"])
    assert result.returncode == 0, result.stderr
    listed = {}
    for line in result.stdout.splitlines():
        kind, _, names = line.partition(":")
        listed[kind.strip()] = [name.strip() for name in names.split(",") if name.strip()]
    return listed


def test_components_lists_the_store_exporter_with_the_collectors():
    listed = _components()
    assert "store" in listed["exporters"], listed
    for name in ("otlp", "otlphttp", "debug", "loadbalancing"):
        assert name in listed["exporters"], listed
    assert {"batch", "memory_limiter", "tail_sampling", "attributes"} <= set(listed["processors"])


def test_validate_accepts_the_all_in_one_pipeline_and_says_where_it_runs():
    result = run_threadline(["validate", "--config", str(ALL_IN_ONE_DEFAULT)])
    assert result.returncode == 0, result.stderr
    assert "configuration is valid" in result.stdout
    assert "exporters::store" in result.stderr and "all-in-one" in result.stderr, result.stderr


def _bad_store_exporter_config(tmp_path):
    grpc, http = free_port(), free_port()
    config = tmp_path / "bad-store.yaml"
    config.write_text(
        "receivers:\n"
        f"  otlp: {{protocols: {{grpc: {{endpoint: '{LOOPBACK}:{grpc}'}}, http: {{endpoint: '{LOOPBACK}:{http}'}}}}}}\n"
        "exporters:\n"
        "  store: {tenantt: acme}\n"
        "service:\n"
        "  pipelines:\n"
        "    traces: {receivers: [otlp], exporters: [store]}\n"
    )
    return config


def test_validate_and_all_in_one_refuse_the_same_bad_store_exporter_config(tmp_path):
    config = _bad_store_exporter_config(tmp_path)
    validate = run_threadline(["validate", "--config", str(config)])
    assert validate.returncode != 0
    assert "exporters::store" in validate.stderr and "tenantt" in validate.stderr, validate.stderr

    api = free_port()
    all_in_one = run_threadline([
        "all-in-one", "--config", str(config), "--data", str(tmp_path / "data"),
        "--store-set", f"server::http_listen_port={api}",
    ], timeout=30)
    assert all_in_one.returncode != 0
    assert "exporters::store" in all_in_one.stderr and "tenantt" in all_in_one.stderr, all_in_one.stderr
    # Refused before anything was opened.
    assert not (tmp_path / "data").exists()


def test_collector_refuses_a_store_exporter_at_start_with_the_reason(tmp_path):
    grpc, http, health, metrics = (free_port() for _ in range(4))
    result = run_threadline([
        "collector", "--config", str(ALL_IN_ONE_DEFAULT),
        "--set", f"receivers::otlp::protocols::grpc::endpoint={LOOPBACK}:{grpc}",
        "--set", f"receivers::otlp::protocols::http::endpoint={LOOPBACK}:{http}",
        "--set", f"extensions::health_check::endpoint={LOOPBACK}:{health}",
        "--set", f"service::telemetry::metrics::address={LOOPBACK}:{metrics}",
    ], timeout=30)
    assert result.returncode != 0
    assert "exporters::store" in result.stderr and "all-in-one" in result.stderr, result.stderr


def test_all_in_one_refuses_a_config_without_a_store_exporter(tmp_path):
    config = tmp_path / "no-store.yaml"
    config.write_text(
        "receivers:\n"
        f"  otlp: {{protocols: {{grpc: {{endpoint: '{LOOPBACK}:{free_port()}'}}}}}}\n"
        "exporters:\n"
        "  debug: {}\n"
        "service:\n"
        "  pipelines:\n"
        "    traces: {receivers: [otlp], exporters: [debug]}\n"
    )
    result = run_threadline([
        "all-in-one", "--config", str(config), "--data", str(tmp_path / "data"),
        "--store-set", f"server::http_listen_port={free_port()}",
    ], timeout=30)
    assert result.returncode != 0
    assert "no pipeline exports to the store" in result.stderr, result.stderr
