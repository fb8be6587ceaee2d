"""Blocks written by Grafana Tempo (vParquet4) in the store's bucket are served beside
Threadline's own, by id and by TraceQL, with no migration step; `threadline store convert` does
the import on demand. The blocks are written here with pyarrow, field by field from Tempo's
`tempodb/encoding/vparquet4/schema.go` at grafana/tempo commit
ad33aa8fafc41a4ea58519f7b7a88b1aa1383224 (struct tags: `list` is a 3-level LIST, pointers are
optional, everything else required), with `meta.json` as Tempo writes it."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.parse
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harness import RawGrpcClient, run_threadline, wait_until
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

TEMPO_COMMIT = "ad33aa8fafc41a4ea58519f7b7a88b1aa1383224"
TENANT = "single-tenant"


def _req(name, type_):
    return pa.field(name, type_, nullable=False)


def _opt(name, type_):
    return pa.field(name, type_, nullable=True)


def _list(item: pa.DataType) -> pa.DataType:
    return pa.list_(pa.field("element", item, nullable=False))


ATTRIBUTE = pa.struct([
    _req("Key", pa.string()),
    _req("IsArray", pa.bool_()),
    _req("Value", _list(pa.string())),
    _req("ValueInt", _list(pa.int64())),
    _req("ValueDouble", _list(pa.float64())),
    _req("ValueBool", _list(pa.bool_())),
    _opt("ValueUnsupported", pa.string()),
])
DEDICATED = pa.struct([_opt(f"String{i:02d}", pa.string()) for i in range(1, 11)])
EVENT = pa.struct([
    _req("TimeSinceStartNano", pa.uint64()),
    _req("Name", pa.string()),
    _req("Attrs", _list(ATTRIBUTE)),
    _req("DroppedAttributesCount", pa.int32()),
])
LINK = pa.struct([
    _req("TraceID", pa.binary()),
    _req("SpanID", pa.binary()),
    _req("TraceState", pa.string()),
    _req("Attrs", _list(ATTRIBUTE)),
    _req("DroppedAttributesCount", pa.int32()),
])
SPAN = pa.struct([
    _req("SpanID", pa.binary()),
    _req("ParentSpanID", pa.binary()),
    _req("ParentID", pa.int32()),
    _req("NestedSetLeft", pa.int32()),
    _req("NestedSetRight", pa.int32()),
    _req("Name", pa.string()),
    _req("Kind", pa.int64()),
    _req("TraceState", pa.string()),
    _req("StartTimeUnixNano", pa.uint64()),
    _req("DurationNano", pa.uint64()),
    _req("StatusCode", pa.int64()),
    _req("StatusMessage", pa.string()),
    _req("Attrs", _list(ATTRIBUTE)),
    _req("DroppedAttributesCount", pa.int32()),
    _req("Events", _list(EVENT)),
    _req("DroppedEventsCount", pa.int32()),
    _req("Links", _list(LINK)),
    _req("DroppedLinksCount", pa.int32()),
    _opt("HttpMethod", pa.string()),
    _opt("HttpUrl", pa.string()),
    _opt("HttpStatusCode", pa.int64()),
    _req("DedicatedAttributes", DEDICATED),
])
SCOPE = pa.struct([
    _req("Name", pa.string()),
    _req("Version", pa.string()),
    _req("Attrs", _list(ATTRIBUTE)),
    _req("DroppedAttributesCount", pa.int32()),
])
SCOPE_SPANS = pa.struct([_req("Scope", SCOPE), _req("Spans", _list(SPAN))])
RESOURCE = pa.struct([
    _req("Attrs", _list(ATTRIBUTE)),
    _req("DroppedAttributesCount", pa.int32()),
    _req("ServiceName", pa.string()),
    *[_opt(n, pa.string()) for n in ["Cluster", "Namespace", "Pod", "Container", "K8sClusterName",
                                      "K8sNamespaceName", "K8sPodName", "K8sContainerName"]],
    _req("DedicatedAttributes", DEDICATED),
])
RESOURCE_SPANS = pa.struct([_req("Resource", RESOURCE), _req("ss", _list(SCOPE_SPANS))])
SERVICE_STATS = pa.struct([_req("SpanCount", pa.uint32()), _req("ErrorCount", pa.uint32())])
TRACE = pa.schema([
    _req("TraceID", pa.binary()),
    _req("TraceIDText", pa.string()),
    _req("StartTimeUnixNano", pa.uint64()),
    _req("EndTimeUnixNano", pa.uint64()),
    _req("DurationNano", pa.uint64()),
    _req("RootServiceName", pa.string()),
    _req("RootSpanName", pa.string()),
    _req("ServiceStats", pa.map_(pa.field("key", pa.string(), nullable=False),
                                 pa.field("value", SERVICE_STATS, nullable=False))),
    _req("rs", _list(RESOURCE_SPANS)),
])

# meta.json's dedicatedColumns, as Tempo writes them (scope "span" and type "string" omitted).
DEDICATED_COLUMNS = [{"s": "resource", "n": "ip"}, {"n": "instance"}]


def attr(key, value=None, *, ints=(), doubles=(), bools=(), strings=(), array=False, unsupported=None):
    out = {"Key": key, "IsArray": array, "Value": list(strings), "ValueInt": list(ints),
           "ValueDouble": list(doubles), "ValueBool": list(bools), "ValueUnsupported": unsupported}
    if isinstance(value, bool):
        out["ValueBool"] = [value]
    elif isinstance(value, int):
        out["ValueInt"] = [value]
    elif isinstance(value, float):
        out["ValueDouble"] = [value]
    elif isinstance(value, str):
        out["Value"] = [value]
    return out


def dedicated(*values):
    return {f"String{i:02d}": (values[i - 1] if i <= len(values) else None) for i in range(1, 11)}


def span(name, start, duration, *, parent=b"", method=None, url=None, code=None, attrs=(), events=(),
         links=(), status=0, message="", kind=2, instance=None):
    return {
        "SpanID": os.urandom(8), "ParentSpanID": parent, "ParentID": 0, "NestedSetLeft": 0,
        "NestedSetRight": 0, "Name": name, "Kind": kind, "TraceState": "tempo=1",
        "StartTimeUnixNano": start, "DurationNano": duration, "StatusCode": status,
        "StatusMessage": message, "Attrs": list(attrs), "DroppedAttributesCount": 1,
        "Events": list(events), "DroppedEventsCount": 2, "Links": list(links), "DroppedLinksCount": 3,
        "HttpMethod": method, "HttpUrl": url, "HttpStatusCode": code,
        "DedicatedAttributes": dedicated(instance),
    }


def resource(service, spans, *, attrs=(), ip=None, **well_known):
    columns = {n: well_known.get(n) for n in ["Cluster", "Namespace", "Pod", "Container", "K8sClusterName",
                                             "K8sNamespaceName", "K8sPodName", "K8sContainerName"]}
    return {
        "Resource": {"Attrs": list(attrs), "DroppedAttributesCount": 0, "ServiceName": service, **columns,
                     "DedicatedAttributes": dedicated(ip)},
        "ss": [{"Scope": {"Name": "tempo-scope", "Version": "0.9", "Attrs": [attr("scope.attr", "s")],
                          "DroppedAttributesCount": 0}, "Spans": spans}],
    }


def trace_row(trace_id: bytes, resource_spans):
    spans = [s for rs in resource_spans for ss in rs["ss"] for s in ss["Spans"]]
    start = min(s["StartTimeUnixNano"] for s in spans)
    end = max(s["StartTimeUnixNano"] + s["DurationNano"] for s in spans)
    root = next(s for s in spans if not s["ParentSpanID"])
    stats = {}
    for rs in resource_spans:
        count = sum(len(ss["Spans"]) for ss in rs["ss"])
        stats[rs["Resource"]["ServiceName"]] = {"SpanCount": count, "ErrorCount": 0}
    return {
        "TraceID": trace_id, "TraceIDText": trace_id.hex().lstrip("0"), "StartTimeUnixNano": start,
        "EndTimeUnixNano": end, "DurationNano": end - start,
        "RootServiceName": resource_spans[0]["Resource"]["ServiceName"], "RootSpanName": root["Name"],
        "ServiceStats": list(stats.items()), "rs": resource_spans,
    }


def write_tempo_block(bucket: Path, rows: list[dict]) -> Path:
    """A vParquet4 block as Tempo lays it out: <tenant>/<blockID>/{data.parquet, meta.json, bloom-0, index}."""
    rows = sorted(rows, key=lambda r: r["TraceID"])  # Tempo writes traces sorted by id
    block_id = str(uuid.uuid4())
    folder = bucket / TENANT / block_id
    folder.mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=TRACE)
    # Two traces per row group, so that the reader crosses row groups.
    pq.write_table(table, folder / "data.parquet", row_group_size=2, compression="snappy")
    start = min(r["StartTimeUnixNano"] for r in rows) // 10**9
    end = max(r["EndTimeUnixNano"] for r in rows) // 10**9
    iso = lambda s: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s))  # noqa: E731
    size = (folder / "data.parquet").stat().st_size
    (folder / "meta.json").write_text(json.dumps({
        "format": "vParquet4", "blockID": block_id, "tenantID": TENANT, "startTime": iso(start),
        "endTime": iso(end), "totalObjects": len(rows), "size": size, "compactionLevel": 0,
        "encoding": "none", "indexPageSize": 0, "totalRecords": 1, "dataEncoding": "",
        "bloomShards": 1, "footerSize": 0, "dedicatedColumns": DEDICATED_COLUMNS,
    }))
    # Tempo's bloom filter and row-group index: not read by the import, and left as they are.
    (folder / "bloom-0").write_bytes(os.urandom(64))
    (folder / "index").write_bytes(os.urandom(32))
    return folder


def checksums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _attrs(items) -> dict:
    return {kv["key"]: next(iter(kv["value"].values())) if kv["value"] else None for kv in items}


def _spans(body) -> list[dict]:
    return [s for b in body["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]


def _search(store, q: str) -> set[str]:
    body = store.json("/api/search?" + urllib.parse.urlencode({"q": q, "limit": 50}))
    return {t["traceID"] for t in body["traces"]}


def _sample_rows(now: int):
    checkout_id, other_id = os.urandom(16), os.urandom(16)
    root = span("GET /cart", now, 40_000_000, method="GET", url="http://shop/cart", code=200, instance="pod-a",
                attrs=[attr("retries", 2), attr("ratio", 0.25), attr("cached", True),
                       attr("tags", strings=["a", "b"], array=True),
                       attr("meta", unsupported='{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}')],
                events=[{"TimeSinceStartNano": 1_000_000, "Name": "cache miss",
                         "Attrs": [attr("key", "cart:1")], "DroppedAttributesCount": 0}],
                links=[{"TraceID": other_id, "SpanID": b"\x07" * 8, "TraceState": "l=1",
                        "Attrs": [attr("why", "retry")], "DroppedAttributesCount": 0}])
    child = span("SELECT cart", now + 5_000_000, 10_000_000, parent=root["SpanID"], kind=3, status=2,
                 message="timeout", attrs=[attr("db.system", "postgresql")])
    checkout = trace_row(checkout_id, [
        resource("checkout", [root], attrs=[attr("deployment.environment", "prod")], ip="10.1.2.3",
                 Cluster="eu-1", K8sNamespaceName="shop", K8sPodName="checkout-7f9"),
        resource("postgres", [child]),
    ])
    others = [trace_row(os.urandom(16), [resource("billing", [
        span(f"POST /pay/{i}", now + i, 1_000_000, method="POST", code=201)])]) for i in range(3)]
    return checkout_id, root, child, [checkout, *others]


def test_tempo_blocks_are_served_by_id_and_traceql_and_survive_restarts(store_factory, tmp_path):
    data_dir = tmp_path / "store"
    bucket = data_dir / "blocks"
    now = time.time_ns() - 10 * 60 * 10**9
    checkout_id, root, child, rows = _sample_rows(now)
    folder = write_tempo_block(bucket, rows)
    before = checksums(folder)

    store = store_factory(data_dir=data_dir, sets=["compactor::compaction::compaction_cycle=1s"])
    tid = checkout_id.hex()
    wait_until(lambda: store.get(f"/api/traces/{tid}")[0] == 200, 20, "the Tempo trace is not served", interval=0.2)

    body = store.json(f"/api/traces/{tid}")
    by_service = {_attrs(b["resource"]["attributes"])["service.name"]: b for b in body["batches"]}
    resource = _attrs(by_service["checkout"]["resource"]["attributes"])
    assert resource == {"deployment.environment": "prod", "ip": "10.1.2.3", "service.name": "checkout",
                        "cluster": "eu-1", "k8s.namespace.name": "shop", "k8s.pod.name": "checkout-7f9"}
    scope = by_service["checkout"]["scopeSpans"][0]["scope"]
    assert scope["name"] == "tempo-scope" and scope["version"] == "0.9"
    spans = {s["name"]: s for s in _spans(body)}
    assert set(spans) == {"GET /cart", "SELECT cart"}
    server, db = spans["GET /cart"], spans["SELECT cart"]
    assert server["spanId"] == root["SpanID"].hex() and server["traceId"] == tid
    assert server["kind"] == 2 and server["traceState"] == "tempo=1"
    assert int(server["startTimeUnixNano"]) == now and int(server["endTimeUnixNano"]) == now + 40_000_000
    attrs = _attrs(server["attributes"])
    assert attrs["http.method"] == "GET" and attrs["http.url"] == "http://shop/cart"
    assert attrs["http.status_code"] == "200" and attrs["instance"] == "pod-a"
    assert attrs["retries"] == "2" and attrs["ratio"] == 0.25 and attrs["cached"] is True
    assert [v["stringValue"] for v in attrs["tags"]["values"]] == ["a", "b"]
    assert attrs["meta"]["values"][0]["key"] == "k"
    assert server["droppedAttributesCount"] == 1 and server["droppedEventsCount"] == 2
    assert server["droppedLinksCount"] == 3
    event = server["events"][0]
    assert event["name"] == "cache miss" and int(event["timeUnixNano"]) == now + 1_000_000
    assert _attrs(event["attributes"]) == {"key": "cart:1"}
    link = server["links"][0]
    assert link["spanId"] == "07" * 8 and link["traceState"] == "l=1" and _attrs(link["attributes"]) == {"why": "retry"}
    assert db["parentSpanId"] == server["spanId"] and db["kind"] == 3
    assert db["status"] == {"code": 2, "message": "timeout"}
    v2 = store.json(f"/api/v2/traces/{tid}")
    assert sum(len(ss["spans"]) for rs in v2["trace"]["resourceSpans"] for ss in rs["scopeSpans"]) == 2

    billing = {r["TraceID"].hex() for r in rows[1:]}
    assert _search(store, '{ span.http.method = "GET" }') == {tid}
    assert _search(store, '{ span.http.method = "POST" }') == billing
    assert _search(store, '{ resource.service.name = "checkout" }') == {tid}
    assert _search(store, '{ resource.k8s.namespace.name = "shop" && span.http.status_code = 200 }') == {tid}
    assert _search(store, '{ resource.ip = "10.1.2.3" }') == {tid}
    assert _search(store, '{ status = error && resource.service.name = "postgres" }') == {tid}

    marker = json.loads((bucket / "_threadline" / "tempo-imports" / TENANT / f"{folder.name}.json").read_text())
    assert marker["state"] == "done" and marker["traces"] == 4 and marker["spans"] == 5

    # A restart imports nothing again: no duplicates.
    store.stop()
    store = store_factory(data_dir=data_dir, sets=["compactor::compaction::compaction_cycle=1s"])
    time.sleep(2.5)  # two import cycles
    assert len(_spans(store.json(f"/api/traces/{tid}"))) == 2
    result = store.json("/api/search?" + urllib.parse.urlencode({"q": "{ } | count() > 0", "limit": 50}))
    assert len(result["traces"]) == 4
    assert "imported a Tempo block" not in store.output()
    assert checksums(folder) == before, "Tempo's files were modified"


def test_store_convert_converts_once_and_resumes_an_interrupted_import(store_factory, tmp_path):
    data_dir = tmp_path / "store"
    bucket = data_dir / "blocks"
    store = store_factory(data_dir=data_dir)
    now = time.time_ns() - 10 * 60 * 10**9
    checkout_id, root, child, rows = _sample_rows(now)
    # An import that crashed half-way: the root span already reached the store, the marker says
    # "started" (by this importer).
    client = RawGrpcClient(store.grpc_endpoint)
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
    rs.scope_spans.add().spans.add(trace_id=checkout_id, span_id=root["SpanID"], name="GET /cart", kind=2,
                                   start_time_unix_nano=now, end_time_unix_nano=now + 40_000_000)
    client.export(request)
    client.close()
    store.stop()
    folder = write_tempo_block(bucket, rows)
    before = checksums(folder)
    marker_dir = bucket / "_threadline" / "tempo-imports" / TENANT
    marker_dir.mkdir(parents=True)
    owner = f"threadline store convert@{os.environ.get('HOSTNAME', '')}"
    (marker_dir / f"{folder.name}.json").write_text(json.dumps(
        {"state": "started", "owner": owner, "updated_unix_secs": int(time.time())}))

    sets = [f"storage::trace::local::path={bucket}", "storage::trace::wal::path=" + str(tmp_path / "unused-wal")]
    argv = ["store", "convert"] + [a for s in sets for a in ("--set", s)]
    converted = run_threadline(argv, timeout=60)
    assert converted.returncode == 0, converted.stderr
    assert f"converted {TENANT}/{folder.name}: 4 traces, 4 spans (resumed: 1 spans were already converted)" \
        in converted.stdout, converted.stdout
    assert "1 Tempo blocks converted, 0 converted before, 0 failed" in converted.stdout
    again = run_threadline(argv, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "0 Tempo blocks converted, 1 converted before, 0 failed" in again.stdout, again.stdout

    store = store_factory(data_dir=data_dir)
    spans = _spans(store.json(f"/api/traces/{checkout_id.hex()}"))
    assert sorted(s["name"] for s in spans) == ["GET /cart", "SELECT cart"], "a span duplicated or lost"
    assert _search(store, '{ span.http.method = "POST" }') == {r["TraceID"].hex() for r in rows[1:]}
    assert checksums(folder) == before


def test_a_damaged_tempo_block_is_logged_and_does_not_stop_the_store(store_factory, tmp_path):
    data_dir = tmp_path / "store"
    bucket = data_dir / "blocks"
    now = time.time_ns() - 10 * 60 * 10**9
    checkout_id, _, _, rows = _sample_rows(now)
    good = write_tempo_block(bucket, rows)
    _, _, _, damaged_rows = _sample_rows(now)
    damaged = write_tempo_block(bucket, damaged_rows)
    # The second row group's first page header overwritten: the footer still reads, the first
    # row group too, and the second fails part-way through the block.
    data = bytearray((damaged / "data.parquet").read_bytes())
    chunk = pq.ParquetFile(damaged / "data.parquet").metadata.row_group(1).column(0)
    offset = chunk.dictionary_page_offset or chunk.data_page_offset
    data[offset:offset + 16] = b"\xff" * 16
    (damaged / "data.parquet").write_bytes(bytes(data))
    before = {p.name: checksums(p) for p in (good, damaged)}

    store = store_factory(data_dir=data_dir, sets=["compactor::compaction::compaction_cycle=1s"])
    wait_until(lambda: store.get(f"/api/traces/{checkout_id.hex()}")[0] == 200, 20,
               "the good block's trace is not served", interval=0.2)
    wait_until(lambda: "cannot import a Tempo block" in store.output(), 10, "no error logged", interval=0.2)
    line = next(line for line in store.output().splitlines() if "cannot import a Tempo block" in line)
    assert damaged.name in line and "data.parquet" in line, line
    # The store goes on: it ingests and serves new spans.
    client = RawGrpcClient(store.grpc_endpoint)
    request = trace_service_pb2.ExportTraceServiceRequest()
    new_id = os.urandom(16)
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=new_id, span_id=os.urandom(8), name="after", start_time_unix_nano=time.time_ns(),
        end_time_unix_nano=time.time_ns() + 1000)
    client.export(request)
    client.close()
    assert store.get(f"/api/traces/{new_id.hex()}")[0] == 200
    marker = json.loads((bucket / "_threadline" / "tempo-imports" / TENANT / f"{damaged.name}.json").read_text())
    assert marker["state"] == "failed" and "data.parquet" in marker["error"], marker
    done = json.loads((bucket / "_threadline" / "tempo-imports" / TENANT / f"{good.name}.json").read_text())
    assert done["state"] == "done"
    assert {p.name: checksums(p) for p in (good, damaged)} == before, "Tempo's files were modified"
