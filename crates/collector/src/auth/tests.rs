//! Authentication end to end inside one process: the real `otlp` receiver behind
//! `bearertokenauth` (gRPC) and `basicauth` (HTTP), fed by the real `otlp` and `otlphttp`
//! exporters whose `auth` names the client side of the same extensions, over loopback sockets.

use std::sync::Arc;
use std::time::Duration;

use threadline_config::ComponentId;

use crate::client;
use crate::component::{CreateContext, ExporterFactory, ExtensionFactory, Host, ReceiverFactory};
use crate::exporters::otlp::OtlpExporterFactory;
use crate::exporters::otlphttp::OtlpHttpExporterFactory;
use crate::exporters::testkit::{traces, yaml};
use crate::extensions::basicauth::BasicAuthFactory;
use crate::extensions::bearertokenauth::BearerTokenAuthFactory;
use crate::extensions::headers_setter::HeadersSetterFactory;
use crate::receivers::otlp::OtlpReceiverFactory;
use crate::telemetry::Telemetry;
use crate::test_support::{client_info, free_port, headers, Recorder};

fn add(
    host: &mut Host,
    telemetry: &Arc<Telemetry>,
    id: &str,
    factory: &dyn ExtensionFactory,
    config: &str,
) {
    let id: ComponentId = id.parse().unwrap();
    let ctx = CreateContext {
        id: &id,
        telemetry,
        host,
    };
    let extension = factory.create(&ctx, &yaml(config)).unwrap();
    host.extensions.insert(id, extension);
}

struct Setup {
    host: Host,
    telemetry: Arc<Telemetry>,
    recorder: Arc<Recorder>,
    grpc: u16,
    http: u16,
    _receiver: Arc<dyn crate::component::Component>,
}

fn setup() -> Setup {
    let telemetry = Telemetry::new("test");
    let mut host = Host::default();
    let hash = bcrypt::hash("alice-pw", 4).unwrap();
    add(
        &mut host,
        &telemetry,
        "bearertokenauth/server",
        &BearerTokenAuthFactory,
        "tokens: [t1, t2]",
    );
    add(
        &mut host,
        &telemetry,
        "bearertokenauth/client",
        &BearerTokenAuthFactory,
        "token: t2",
    );
    add(
        &mut host,
        &telemetry,
        "bearertokenauth/wrong",
        &BearerTokenAuthFactory,
        "token: t3",
    );
    add(
        &mut host,
        &telemetry,
        "basicauth/server",
        &BasicAuthFactory,
        &format!("htpasswd: {{inline: \"alice:{hash}\\nbob:plain-pw\"}}"),
    );
    add(
        &mut host,
        &telemetry,
        "basicauth/client",
        &BasicAuthFactory,
        "client_auth: {username: alice, password: alice-pw}",
    );
    add(
        &mut host,
        &telemetry,
        "headers_setter",
        &HeadersSetterFactory,
        "headers:\n- {key: X-Tenant, from_context: x-tenant, default_value: none}\n\
         - {key: X-Fixed, value: v1}\n- {key: X-Static, action: delete}",
    );
    let (grpc, http) = (free_port(), free_port());
    let config = format!(
        "protocols:\n  grpc:\n    endpoint: 127.0.0.1:{grpc}\n    auth: {{authenticator: bearertokenauth/server}}\n    include_metadata: true\n  http:\n    endpoint: 127.0.0.1:{http}\n    auth: {{authenticator: basicauth/server}}\n    include_metadata: true\n"
    );
    let recorder = Arc::new(Recorder::default());
    let id: ComponentId = "otlp".parse().unwrap();
    let ctx = CreateContext {
        id: &id,
        telemetry: &telemetry,
        host: &host,
    };
    let receiver = OtlpReceiverFactory
        .create_traces(&ctx, &yaml(&config), recorder.clone())
        .unwrap();
    Setup {
        host,
        telemetry,
        recorder,
        grpc,
        http,
        _receiver: receiver,
    }
}

impl Setup {
    fn exporter(
        &self,
        factory: &dyn ExporterFactory,
        id: &str,
        config: &str,
    ) -> anyhow::Result<Arc<dyn crate::component::Exporter>> {
        let id: ComponentId = id.parse().unwrap();
        let ctx = CreateContext {
            id: &id,
            telemetry: &self.telemetry,
            host: &self.host,
        };
        let config = format!(
            "{config}\nsending_queue: {{enabled: false}}\nretry_on_failure: {{enabled: false}}"
        );
        factory.create_traces(&ctx, &yaml(&config))
    }

    fn grpc_exporter(&self, auth: &str) -> Arc<dyn crate::component::Exporter> {
        let config = format!(
            "endpoint: 127.0.0.1:{}\ntls: {{insecure: true}}\nauth: {{authenticator: {auth}}}",
            self.grpc
        );
        self.exporter(&OtlpExporterFactory, "otlp", &config)
            .unwrap()
    }

    fn http_exporter(&self, auth: &str, headers: &str) -> Arc<dyn crate::component::Exporter> {
        let config = format!(
            "endpoint: http://127.0.0.1:{}\nauth: {{authenticator: {auth}}}\nheaders: {headers}",
            self.http
        );
        self.exporter(&OtlpHttpExporterFactory, "otlphttp", &config)
            .unwrap()
    }
}

#[tokio::test]
async fn bearer_tokens_guard_grpc_and_the_exporter_sends_its_token() {
    let s = setup();
    s.grpc_exporter("bearertokenauth/client")
        .consume(traces("ok", 3))
        .await
        .unwrap();
    assert_eq!(s.recorder.sizes(), vec![3]);
    let err = s
        .grpc_exporter("bearertokenauth/wrong")
        .consume(traces("wrong", 1))
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("does not match"), "{err}");

    // A plain gRPC client without a token.
    let mut client = threadline_otlp::proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://127.0.0.1:{}", s.grpc),
    )
    .await
    .unwrap();
    let status = client
        .export(traces("none", 1).to_request().unwrap())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(status
        .message()
        .contains("missing or empty authorization header"));
    assert_eq!(s.recorder.sizes(), vec![3]);
}

#[tokio::test]
async fn basic_auth_guards_http_with_401_and_the_exporter_sends_credentials() {
    let s = setup();
    s.http_exporter("basicauth/client", "{}")
        .consume(traces("ok", 2))
        .await
        .unwrap();
    assert_eq!(s.recorder.sizes(), vec![2]);

    let url = format!("http://127.0.0.1:{}/v1/traces", s.http);
    let body = traces("raw", 1).to_request().unwrap();
    let body = prost::Message::encode_to_vec(&body);
    let http = reqwest::Client::new();
    for auth in [None, Some(("alice", "wrong")), Some(("carol", "x"))] {
        let mut request = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone());
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
    }
    let ok = http
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .basic_auth("bob", Some("plain-pw"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(s.recorder.sizes(), vec![2, 1]);
}

#[tokio::test]
async fn headers_setter_sends_values_from_the_datas_metadata() {
    let s = setup();
    // headers_setter alone cannot pass basicauth: give the exporter static credentials and
    // let the setter add X-Tenant from the data's metadata, X-Fixed, and drop X-Static.
    let basic = crate::auth::basic_header("alice", "alice-pw");
    let exporter = s.http_exporter(
        "headers_setter",
        &format!("{{Authorization: \"{basic}\", X-Static: gone}}"),
    );
    client::scope(
        client_info(&[("x-tenant", "team-a")]),
        exporter.consume(traces("a", 1)),
    )
    .await
    .unwrap();
    exporter.consume(traces("none", 1)).await.unwrap();
    let clients = s.recorder.clients();
    assert_eq!(clients[0].get("x-tenant"), ["team-a"]);
    assert_eq!(clients[1].get("x-tenant"), ["none"]);
    assert_eq!(clients[0].get("x-fixed"), ["v1"]);
    assert!(clients[0].get("x-static").is_empty());
}

#[tokio::test]
async fn an_exporter_naming_a_missing_or_server_only_authenticator_fails_at_start() {
    let s = setup();
    for (auth, expected) in [
        ("bearertokenauth/absent", "is not running"),
        ("basicauth/server", "cannot add credentials"),
    ] {
        let err = s
            .exporter(
                &OtlpExporterFactory,
                "otlp",
                &format!("endpoint: 127.0.0.1:1\nauth: {{authenticator: {auth}}}"),
            )
            .err()
            .unwrap();
        let text = format!("{err:#}");
        assert!(
            text.contains("exporters::otlp::auth::authenticator") && text.contains(expected),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "first\n").unwrap();
    let telemetry = Telemetry::new("test");
    let mut host = Host::default();
    add(
        &mut host,
        &telemetry,
        "bearertokenauth",
        &BearerTokenAuthFactory,
        &format!("filename: {}", path.display()),
    );
    let auth = host
        .extensions
        .values()
        .next()
        .unwrap()
        .server_authenticator()
        .unwrap();
    let check = |token: &str| {
        let mut headers = headers(&[("authorization", &format!("Bearer {token}"))]);
        auth.authenticate(&mut headers).is_ok()
    };
    assert!(check("first"));
    // Blank lines are not tokens: "Bearer " alone never passes.
    assert!(!check(""));
    std::fs::write(&path, "second\nthird\n\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !check("second") && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(check("second") && check("third"));
    assert!(!check("first"));
}
