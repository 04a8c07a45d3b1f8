//! Trace propagation across services: a small OTLP receiver collects the spans that a
//! scheduler and a flusher (real processes) export; the flusher's RegisterWorker call and
//! the scheduler's handling of it must be spans of one trace, the server span a child of
//! the client's.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tests::{Ports, Proc, service_env, wait_healthy, wait_until};

/// (service.name, span name, trace id, span id, parent span id)
type Collected = Arc<Mutex<Vec<(String, String, Vec<u8>, Vec<u8>, Vec<u8>)>>>;

struct Receiver(Collected);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((
                        service.clone(),
                        s.name,
                        s.trace_id,
                        s.span_id,
                        s.parent_span_id,
                    ));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_services_is_one_trace() {
    let collected: Collected = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(collected.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let dir = tempfile::tempdir().unwrap();
    let (sp, fp) = (Ports::free(), Ports::free());
    let mut env = service_env("scheduler", sp, dir.path());
    env.push(("DP__TELEMETRY__OTLP_ENDPOINT".to_owned(), otlp.clone()));
    let sched = Proc::start("scheduler", "scheduler", dir.path(), &[], &env);
    let mut env = service_env("flusher", fp, dir.path());
    env.push(("DP__TELEMETRY__OTLP_ENDPOINT".to_owned(), otlp));
    env.push((
        "DP__SCHEDULER__ENDPOINT".to_owned(),
        format!("http://127.0.0.1:{}", sp.grpc),
    ));
    tokio::task::block_in_place(|| wait_healthy(&sched, sp.http));
    let mut flusher = Proc::start("flusher", "flusher", dir.path(), &[], &env);
    tokio::task::block_in_place(|| {
        wait_healthy(&flusher, fp.http);
        assert!(wait_until(Duration::from_secs(5), || flusher
            .log_text()
            .contains("registered with the scheduler")));
        // Exiting flushes the batch exporters.
        flusher.terminate();
        assert!(flusher.wait_timeout(Duration::from_secs(10)).is_some());
        sched.terminate();
    });

    let found = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(10), || {
            let spans = collected.lock().unwrap();
            spans.iter().any(|(svc, name, trace, id, _)| {
                svc == "flusher"
                    && name == "register_worker"
                    && spans.iter().any(|(s2, n2, t2, _, parent)| {
                        s2 == "scheduler"
                            && n2.contains("RegisterWorker")
                            && t2 == trace
                            && parent == id
                    })
            })
        })
    });
    let spans = collected.lock().unwrap();
    let summary: Vec<(String, String)> = spans.iter().map(|s| (s.0.clone(), s.1.clone())).collect();
    assert!(
        found,
        "no flusher register_worker span with a scheduler RegisterWorker child in the same trace; spans: {summary:?}"
    );
}
