//! Trace propagation across services: a small OTLP receiver collects the spans that the
//! services (real processes) export.
//!
//! - The flusher's RegisterWorker call and the scheduler's handling of it are spans of one
//!   trace, the server span a child of the client's.
//! - A compaction is one trace: the scheduler's `dispatch`, the compactor's CompactLevel
//!   server span, its attempt (`compaction`) with `merge`, `read_inputs` and
//!   `write_output` below it, and the scheduler's CompleteTask handling and `commit`, every
//!   task-level span carrying the task id; the compactor's log lines carry it too.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tests::data::DataCluster;
use tests::{Ports, Proc, service_env, wait_healthy, wait_until};

/// One exported span.
#[derive(Debug, Clone)]
struct Span {
    /// The resource's `service.name`.
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    /// Empty for a root span.
    parent: Vec<u8>,
    /// Attribute values, as text.
    attrs: BTreeMap<String, String>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
}

type Collected = Arc<Mutex<Vec<Span>>>;

fn text(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

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
                .map(|a| text(a.value.as_ref()))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace: s.trace_id,
                        id: s.span_id,
                        parent: s.parent_span_id,
                        attrs: s
                            .attributes
                            .iter()
                            .map(|a| (a.key.clone(), text(a.value.as_ref())))
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the receiver on a free port; returns what it collects and its endpoint.
async fn start_receiver() -> (Collected, String) {
    let collected: Collected = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Receiver(collected.clone())))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);
    (collected, otlp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_services_is_one_trace() {
    let (collected, otlp) = start_receiver().await;

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
            spans.iter().any(|c| {
                c.service == "flusher"
                    && c.name == "register_worker"
                    && spans.iter().any(|s| {
                        s.service == "scheduler"
                            && s.name.contains("RegisterWorker")
                            && s.trace == c.trace
                            && s.parent == c.id
                    })
            })
        })
    });
    let spans = collected.lock().unwrap();
    let summary: Vec<(&str, &str)> = spans
        .iter()
        .map(|s| (s.service.as_str(), s.name.as_str()))
        .collect();
    assert!(
        found,
        "no flusher register_worker span with a scheduler RegisterWorker child in the same trace; spans: {summary:?}"
    );
}

/// The spans of one task's trace, from its `dispatch` span down.
struct TaskTrace {
    task_id: String,
    /// The trace's spans by id.
    spans: HashMap<Vec<u8>, Span>,
    dispatch: Vec<u8>,
}

impl TaskTrace {
    /// The dispatch span's parent is the scheduler's `decide` span of the same task: the
    /// trace starts where the task was decided, and its queueing time shows between them.
    fn decided(&self) -> Result<(), String> {
        let dispatch = &self.spans[&self.dispatch];
        let parent = self
            .spans
            .get(&dispatch.parent)
            .ok_or("the dispatch span has no parent in the trace")?;
        if parent.service != "scheduler" || parent.name != "decide" {
            return Err(format!(
                "the dispatch span's parent is {parent:?}, not decide"
            ));
        }
        for k in ["task_id", "task_type"] {
            if parent.attr(k) != dispatch.attr(k) {
                return Err(format!("decide {k} {:?} != dispatch's", parent.attr(k)));
            }
        }
        Ok(())
    }

    /// Whether `ancestor` is on the parent chain of `span` (or is `span`).
    fn descends(&self, span: &Span, ancestor: &[u8]) -> bool {
        let mut at = Some(span);
        while let Some(s) = at {
            if s.id == ancestor {
                return true;
            }
            at = self.spans.get(&s.parent);
        }
        false
    }

    /// A span of `service` named `name` (`*suffix`: ending in `suffix`), below `under`.
    fn find(&self, service: &str, name: &str, under: &[u8]) -> Result<&Span, String> {
        let matches = |n: &str| match name.strip_prefix('*') {
            Some(suffix) => n.ends_with(suffix),
            None => n == name,
        };
        self.spans
            .values()
            .find(|s| s.service == service && matches(&s.name) && self.descends(s, under))
            .ok_or_else(|| format!("no {service} span {name} under the expected parent"))
    }

    /// The worker's side, the same for every task: its RPC server span `rpc` is the
    /// dispatch span's child, its attempt span `attempt` the server span's, with the
    /// dispatch's task attributes. Returns the attempt span.
    fn worker_attempt(&self, worker: &str, rpc: &str, attempt: &str) -> Result<&Span, String> {
        let server = self.find(worker, rpc, &self.dispatch)?;
        if server.parent != self.dispatch {
            return Err(format!("{rpc} is not the dispatch span's child"));
        }
        let a = self.find(worker, attempt, &server.id)?;
        if a.parent != server.id {
            return Err(format!("{attempt} is not the child of {rpc}"));
        }
        let dispatch = &self.spans[&self.dispatch];
        for k in ["task_id", "attempt", "table", "task_type"] {
            if a.attr(k).is_none() || a.attr(k) != dispatch.attr(k) {
                return Err(format!(
                    "{attempt} {k}: {:?}, the dispatch's: {:?}",
                    a.attr(k),
                    dispatch.attr(k)
                ));
            }
        }
        Ok(a)
    }

    /// The scheduler's side of the report: CompleteTask below the attempt, a succeeded
    /// `commit` of the task below that; and no span of the trace names another task.
    fn committed_below(&self, attempt: &Span) -> Result<(), String> {
        let complete = self.find("scheduler", "*/CompleteTask", &attempt.id)?;
        let commit = self.find("scheduler", "commit", &complete.id)?;
        if commit.attr("status") != Some("succeeded")
            || commit.attr("task_id") != Some(self.task_id.as_str())
        {
            return Err(format!("commit attributes {:?}", commit.attrs));
        }
        if let Some(other) = self
            .spans
            .values()
            .find(|s| s.attr("task_id").is_some_and(|id| id != self.task_id))
        {
            return Err(format!("a span of another task in the trace: {other:?}"));
        }
        Ok(())
    }

    /// The trace as an indented tree (name, service, task attributes).
    fn render(&self) -> String {
        fn walk(t: &TaskTrace, id: &[u8], depth: usize, out: &mut String) {
            let s = &t.spans[id];
            let attrs: Vec<String> = ["task_id", "attempt", "table", "task_type"]
                .iter()
                .filter_map(|k| s.attr(k).map(|v| format!("{k}={v}")))
                .collect();
            out.push_str(&format!(
                "{}{} [{}] {}\n",
                "  ".repeat(depth),
                s.name,
                s.service,
                attrs.join(" ")
            ));
            let mut children: Vec<&Span> = t.spans.values().filter(|c| c.parent == id).collect();
            children.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
            for c in children {
                walk(t, &c.id, depth + 1, out);
            }
        }
        let mut out = String::new();
        walk(self, &self.dispatch, 0, &mut out);
        out
    }
}

fn check_compaction(t: &TaskTrace) -> Result<(), String> {
    t.decided()?;
    let attempt = t.worker_attempt("compactor", "*/CompactLevel", "compaction")?;
    let merge = t.find("compactor", "merge", &attempt.id)?;
    t.find("compactor", "read_inputs", &merge.id)?;
    t.find("compactor", "write_output", &merge.id)?;
    t.committed_below(attempt)
}

fn check_flush(t: &TaskTrace) -> Result<(), String> {
    t.decided()?;
    let attempt = t.worker_attempt("flusher", "*/FlushMemtable", "memtable_flush")?;
    let read = t.find("flusher", "read_memtable", &attempt.id)?;
    // The replayer serves the stream inside the same trace.
    t.find("replayer", "*/ReadMemtable", &read.id)?;
    let build = t.find("flusher", "build_sst", &attempt.id)?;
    t.find("flusher", "write_output", &build.id)?;
    t.committed_below(attempt)
}

/// The trace of a task of `task_type` that passes `check`, or what is missing.
fn task_trace(
    spans: &[Span],
    task_type: &str,
    check: fn(&TaskTrace) -> Result<(), String>,
) -> Result<TaskTrace, String> {
    let mut last = format!("no scheduler dispatch span of a {task_type}");
    let dispatches = spans.iter().filter(|s| {
        s.service == "scheduler" && s.name == "dispatch" && s.attr("task_type") == Some(task_type)
    });
    for d in dispatches {
        let Some(task_id) = d.attr("task_id") else {
            last = format!("dispatch span without task_id: {d:?}");
            continue;
        };
        let t = TaskTrace {
            task_id: task_id.to_owned(),
            spans: spans
                .iter()
                .filter(|s| s.trace == d.trace)
                .map(|s| (s.id.clone(), s.clone()))
                .collect(),
            dispatch: d.id.clone(),
        };
        match check(&t) {
            Ok(()) => return Ok(t),
            Err(e) => last = format!("task {task_id}: {e}\n{}", t.render()),
        }
    }
    Err(last)
}

/// Waits (exports are batched) for a complete trace of a task of `task_type`.
fn wait_for_trace(
    collected: &Collected,
    task_type: &str,
    check: fn(&TaskTrace) -> Result<(), String>,
) -> TaskTrace {
    let mut result = Err(String::new());
    wait_until(Duration::from_secs(20), || {
        result = task_trace(&collected.lock().unwrap(), task_type, check);
        result.is_ok()
    });
    let trace = result.unwrap_or_else(|e| {
        let spans = collected.lock().unwrap();
        let names: std::collections::BTreeSet<(&str, &str)> = spans
            .iter()
            .map(|s| (s.service.as_str(), s.name.as_str()))
            .collect();
        panic!("no complete {task_type} trace: {e}\nspans seen: {names:?}")
    });
    eprintln!("{task_type} trace:\n{}", trace.render());
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_is_one_trace_from_dispatch_to_commit() {
    let (collected, otlp) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| {
        let mut c = DataCluster::start(
            dir.path(),
            &[
                ("DP__TELEMETRY__OTLP_ENDPOINT", otlp.as_str()),
                ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
                // Export batches every 200 ms instead of every 5 s.
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ],
        );
        c.start_flusher();
        let compactor = c.start_compactor();
        c.create_tables(&["t"]);
        let o = c.admin(&["load", "t", "--keys", "8000", "--value-size", "100"]);
        assert_eq!(o.code, 0, "load: {}", o.stderr);
        assert!(
            wait_until(Duration::from_secs(60), || c
                .level_counts("t")
                .iter()
                .skip(1)
                .any(|&n| n > 0)),
            "no compaction committed: levels {:?}",
            c.level_counts("t")
        );

        let trace = wait_for_trace(&collected, "compaction", check_compaction);
        wait_for_trace(&collected, "memtable_flush", check_flush);

        // The attempt's log lines carry its ids (the fmt layer prints the span's fields).
        let log = c.compactors[compactor].as_ref().unwrap().log_text();
        let want = format!("task_id={}", trace.task_id);
        let line = log
            .lines()
            .find(|l| l.contains("compacted") && l.contains(&want) && l.contains("attempt="));
        assert!(
            line.is_some(),
            "no `compacted` log line with {want}:\n{}",
            tests::data::tail(&log, 40)
        );
        eprintln!("log line: {}", line.unwrap_or_default());
    });
}
