"""The operator's offline outputs checked against the Kubernetes OpenAPI schemas.

No cluster runs here, so what can be real is: the `threadline` binary rendering the seed's own
manifests (`operator render -f`), its install set (`install`, with and without cert-manager), and
the kustomize base under deploy/, each object validated with `kubernetes-validate` (the upstream
Kubernetes JSON schemas, offline, strict: unknown fields fail). The seed's custom resources are
checked against the upstream operator's CRD schemas, which the install set must carry.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from harness import REPO_ROOT, collector_binary, seed_dir

KUBERNETES_VERSION = "1.33"
SEED_MANIFESTS = ["agent-collector.yaml", "gateway-collector.yaml", "instrumentation.yaml"]


def threadline(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(collector_binary()), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, f"threadline {' '.join(args)} failed:\n{result.stderr}"
    return result


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate_builtin(obj: dict) -> None:
    """Validates a built-in kind strictly; fails the test with the schema's message."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as err:
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')}: {err.message} at {list(err.path)}")


def crd_schema(crds: list[dict], kind: str, version: str) -> dict:
    for crd in crds:
        if crd["spec"]["names"]["kind"] == kind:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return v["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind} {version}")


def by_kind(objects: list[dict], kind: str, name: str) -> dict:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} in {[(o['kind'], o['metadata']['name']) for o in objects]}")


def test_seed_manifests_render_to_valid_kubernetes_objects():
    files = [str(seed_dir() / name) for name in SEED_MANIFESTS]
    result = threadline("operator", "render", *sum((["-f", f] for f in files), []))
    objects = documents(result.stdout)
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    names = [name for _, name in kinds]
    assert ("DaemonSet", "otel-agent-collector") in kinds
    assert ("Deployment", "otel-gateway-collector") in kinds
    assert ("Deployment", "order-service") in kinds
    for base in ["otel-agent-collector", "otel-gateway-collector"]:
        for suffix in ["", "-headless", "-monitoring"]:
            assert ("Service", base + suffix) in kinds
        assert ("ServiceAccount", base) in kinds
        assert any(n.startswith(base + "-") and len(n) == len(base) + 9 for n in names), names
    assert len(objects) == 13, kinds

    for obj in objects:
        if obj["metadata"]["name"] == "order-service":
            # The seed's Deployment is a fragment (it has no spec.selector): check the pod
            # template the webhook's mutation produced, as the Pod it becomes.
            template = obj["spec"]["template"]
            validate_builtin({"apiVersion": "v1", "kind": "Pod", **template})
        else:
            validate_builtin(obj)

    # The agent routes by trace id to the three-replica tail-sampling gateway, and says so.
    agent_config_map = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("otel-agent-collector-")
    )
    agent_config = yaml.safe_load(agent_config_map["data"]["collector.yaml"])
    lb = agent_config["exporters"]["loadbalancing/otel-gateway"]
    assert lb["routing_key"] == "traceID"
    assert lb["resolver"]["dns"]["hostname"] == "otel-gateway-collector-headless.observability.svc"
    assert agent_config["service"]["pipelines"]["traces"]["exporters"] == ["loadbalancing/otel-gateway"]
    assert "observability/otel-agent: TraceRouting=True RoutedByTraceID" in result.stderr

    # The rewired agent config is one the collector itself accepts.
    config_path = Path(REPO_ROOT / "target" / "operator-agent-config.yaml")
    config_path.write_text(agent_config_map["data"]["collector.yaml"])
    threadline("validate", "--config", str(config_path))

    # The seed's Deployment comes back with its pod template as the webhook mutates it.
    order = by_kind(objects, "Deployment", "order-service")
    pod = order["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["opentelemetry-auto-instrumentation-java"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["JAVA_TOOL_OPTIONS"] == " -javaagent:/otel-auto-instrumentation-java-order-service/javaagent.jar"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-agent-collector.observability.svc:4318"
    assert env["OTEL_SERVICE_NAME"] == "order-service"
    # What only the API server knows is said plainly, not silently left out.
    assert "k8s.replicaset.name=" not in env["OTEL_RESOURCE_ATTRIBUTES"]
    assert (
        "Deployment default/order-service: note: cannot know offline: k8s.replicaset.name "
        "(it will be order-service-<pod-template-hash>;"
    ) in result.stderr, result.stderr


def test_seed_custom_resources_are_valid_under_the_crds_the_install_carries():
    install = documents(threadline("install").stdout)
    crds = [o for o in install if o["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "instrumentations.opentelemetry.io",
        "opentelemetrycollectors.opentelemetry.io",
    ]
    for name in SEED_MANIFESTS:
        for obj in documents((seed_dir() / name).read_text()):
            if obj["apiVersion"].startswith("opentelemetry.io/"):
                version = obj["apiVersion"].split("/")[1]
                jsonschema.validate(obj, crd_schema(crds, obj["kind"], version))
    # Each version the upstream CRDs serve is still served.
    upstream = [d for p in sorted((seed_dir().parent / "upstream-crds").glob("*.yaml")) for d in documents(p.read_text())]
    for crd in upstream:
        ours = next(c for c in crds if c["metadata"]["name"] == crd["metadata"]["name"])
        assert [v["name"] for v in ours["spec"]["versions"]] == [v["name"] for v in crd["spec"]["versions"]]


@pytest.mark.parametrize("cert_manager", [False, True])
def test_install_objects_are_valid_and_least_privilege(cert_manager: bool):
    args = ["install", "--namespace", "tracing"] + (["--cert-manager"] if cert_manager else [])
    objects = documents(threadline(*args).stdout)
    for obj in objects:
        if obj["apiVersion"].startswith("cert-manager.io/"):
            assert obj["kind"] in {"Issuer", "Certificate"}
            continue
        validate_builtin(obj)

    deployment = by_kind(objects, "Deployment", "threadline-operator")
    assert deployment["metadata"]["namespace"] == "tracing"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["operator", "run"]
    webhook = by_kind(objects, "MutatingWebhookConfiguration", "threadline-operator-mutation")["webhooks"][0]
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["clientConfig"]["service"] == {
        "name": "threadline-operator-webhook",
        "namespace": "tracing",
        "path": "/mutate-v1-pod",
        "port": 443,
    }
    assert webhook["rules"][0]["operations"] == ["CREATE"]
    assert webhook["rules"][0]["resources"] == ["pods"]
    if cert_manager:
        assert by_kind(objects, "Certificate", "threadline-operator-serving-cert")
        assert "cert-manager.io/inject-ca-from" in by_kind(
            objects, "MutatingWebhookConfiguration", "threadline-operator-mutation"
        )["metadata"]["annotations"]
    else:
        secret = by_kind(objects, "Secret", "threadline-operator-webhook-cert")
        assert secret["type"] == "kubernetes.io/tls"
        pems = secret["stringData"]
        assert set(pems) == {"tls.crt", "tls.key", "ca.crt"}
        assert base64.b64decode(webhook["clientConfig"]["caBundle"]).decode() == pems["ca.crt"]
        # The serving certificate is for the webhook Service, signed by that CA, valid ~1 year.
        ca = x509.load_pem_x509_certificate(pems["ca.crt"].encode())
        serving = x509.load_pem_x509_certificate(pems["tls.crt"].encode())
        serving.verify_directly_issued_by(ca)
        names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        assert "threadline-operator-webhook.tracing.svc" in names
        lifetime = serving.not_valid_after_utc - serving.not_valid_before_utc
        assert 360 <= lifetime.days <= 366
        not_after = int(secret["metadata"]["annotations"]["threadline.dev/not-after"])
        assert abs(not_after - serving.not_valid_after_utc.timestamp()) < 2

    # Least privilege: no wildcard anywhere, secrets only in the operator's namespace.
    cluster_rules = by_kind(objects, "ClusterRole", "threadline-operator")["rules"]
    for rule in cluster_rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), rule
        assert "secrets" not in rule["resources"], rule
    roles = [o for o in objects if o["kind"] == "Role"]
    if cert_manager:
        assert roles == [], "with cert-manager the operator needs no access to secrets"
    else:
        role = by_kind(objects, "Role", "threadline-operator")
        assert role["metadata"]["namespace"] == "tracing"
        assert role["rules"] == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update", "patch"]}
        ]


def test_deploy_kustomize_base_is_current_and_renders_offline(tmp_path: Path):
    generated = tmp_path / "deploy"
    threadline("install", "--write-kustomize", str(generated))
    committed = REPO_ROOT / "deploy"
    for path in sorted(generated.iterdir()):
        assert (committed / path.name).read_text() == path.read_text(), (
            f"deploy/{path.name} is out of date: run `threadline install --write-kustomize deploy/`"
        )
    assert sorted(p.name for p in committed.iterdir()) == sorted(p.name for p in generated.iterdir())

    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is required (.ci/run installs the Debian package)"
    rendered = subprocess.run([kubectl, "kustomize", str(committed)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    objects = documents(rendered.stdout)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "CustomResourceDefinition", "ClusterRole", "Deployment", "MutatingWebhookConfiguration"} <= kinds
    for obj in objects:
        validate_builtin(obj)
