//! Each real service binary, started as a process on free ports: grpcurl lists its
//! service, Health and reflection and shows the contract's comments; Health says SERVING;
//! /metrics passes `promtool check metrics`; workers show up in the scheduler's status;
//! SIGTERM exits 0 within the drain timeout.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{Ports, Proc, http_get, promtool, run_grpcurl, service_env, wait_healthy, wait_until};

const SERVICES: [(&str, &str); 4] = [
    ("scheduler", "dataprocessor.v1.Scheduler"),
    ("replayer", "dataprocessor.v1.Replayer"),
    ("flusher", "dataprocessor.v1.Flusher"),
    ("compactor", "dataprocessor.v1.Compactor"),
];

/// Starts the scheduler and returns it with its ports.
fn start_scheduler(dir: &std::path::Path) -> (Proc, Ports) {
    let ports = Ports::free();
    let p = Proc::start(
        "scheduler",
        "scheduler",
        dir,
        &[],
        &service_env("scheduler", ports, dir),
    );
    wait_healthy(&p, ports.http);
    (p, ports)
}

/// Starts a worker pointed at the scheduler.
fn start_worker(name: &str, dir: &std::path::Path, scheduler: Ports) -> (Proc, Ports) {
    let ports = Ports::free();
    let mut env = service_env(name, ports, dir);
    env.push((
        "DP__SCHEDULER__ENDPOINT".to_owned(),
        format!("http://127.0.0.1:{}", scheduler.grpc),
    ));
    env.push((
        "DP__SCHEDULER__HEARTBEAT_INTERVAL".to_owned(),
        "200ms".to_owned(),
    ));
    let p = Proc::start(name, name, dir, &[], &env);
    wait_healthy(&p, ports.http);
    (p, ports)
}

fn check_grpc_surface(name: &str, service: &str, ports: Ports) {
    let addr = ports.grpc_addr();
    let out = run_grpcurl(&["-plaintext", &addr, "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: grpcurl list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        service,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.lines().any(|l| l.trim() == expected),
            "{name}: `grpcurl list` lacks {expected}:\n{listed}"
        );
    }

    // describe shows the comments written in the .proto files.
    let out = run_grpcurl(&["-plaintext", &addr, "describe", service]);
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: describe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        described.contains("//"),
        "{name}: describe shows no comments:\n{described}"
    );
    let out = run_grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "dataprocessor.v1.TaskProgress",
    ]);
    let described = String::from_utf8_lossy(&out.stdout);
    assert!(
        described.contains("Bytes read so far"),
        "{name}: field comments missing from describe:\n{described}"
    );

    // Health says SERVING, overall and for the service itself.
    for svc in ["", service] {
        let req = format!("{{\"service\":\"{svc}\"}}");
        let out = run_grpcurl(&[
            "-plaintext",
            "-d",
            &req,
            &addr,
            "grpc.health.v1.Health/Check",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("SERVING"),
            "{name}: Health/Check({svc:?}) = {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn check_metrics(name: &str, ports: Ports) {
    let (code, body) = http_get(ports.http, "/metrics").unwrap();
    assert_eq!(code, 200, "{name}: /metrics status");
    for metric in [
        "processor_tasks_total",
        "processor_queue_depth",
        "processor_memory_usage",
        "processor_cpu_usage",
    ] {
        assert!(
            body.contains(metric),
            "{name}: /metrics lacks {metric}:\n{body}"
        );
    }
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{name}: promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = http_get(ports.http, "/health").unwrap();
    assert_eq!(code, 200, "{name}: /health");
}

#[test]
fn every_service_answers_grpcurl_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (sched, sports) = start_scheduler(dir.path());
    let mut procs = vec![("scheduler", SERVICES[0].1, sports)];
    let mut keep = vec![sched];
    for (name, service) in &SERVICES[1..] {
        let (p, ports) = start_worker(name, dir.path(), sports);
        keep.push(p);
        procs.push((name, service, ports));
    }
    for (name, service, ports) in procs {
        check_grpc_surface(name, service, ports);
        check_metrics(name, ports);
        // Ready once dependencies answer (workers: registered with the scheduler).
        assert!(
            wait_until(Duration::from_secs(5), || matches!(
                http_get(ports.http, "/ready"),
                Ok((200, _))
            )),
            "{name}: /ready never became 200"
        );
    }
}

#[test]
fn workers_appear_in_scheduler_status_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let (_sched, sports) = start_scheduler(dir.path());
    let mut workers = Vec::new();
    for (name, _) in &SERVICES[1..] {
        let started = Instant::now();
        let (p, ports) = start_worker(name, dir.path(), sports);
        let kind = format!("WORKER_KIND_{}", name.to_ascii_uppercase());
        let addr = ports.grpc_addr();
        let seen = wait_until(
            Duration::from_secs(5).saturating_sub(started.elapsed()),
            || {
                let out = run_grpcurl(&[
                    "-plaintext",
                    &sports.grpc_addr(),
                    "dataprocessor.v1.Admin/GetStatus",
                ]);
                let status: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                    Ok(v) => v,
                    Err(_) => return false,
                };
                status["workers"].as_array().is_some_and(|ws| {
                    ws.iter().any(|w| {
                        w["kind"] == kind.as_str()
                            && w["address"] == addr.as_str()
                            && w["alive"] == true
                    })
                })
            },
        );
        assert!(
            seen,
            "{name} not in the scheduler's status within 5 s of start; log:\n{}",
            p.log_text()
        );
        workers.push(p);
    }
}

#[test]
fn sigterm_exits_zero_within_the_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (sched, sports) = start_scheduler(dir.path());
    let mut procs = vec![sched];
    for (name, _) in &SERVICES[1..] {
        procs.push(start_worker(name, dir.path(), sports).0);
    }
    // Workers first, then the scheduler, as an orderly rollout would.
    procs.reverse();
    for mut p in procs {
        p.terminate();
        // drain_timeout is 5 s in service_env; allow process teardown on top.
        let status = p.wait_timeout(Duration::from_secs(7));
        let status = status.unwrap_or_else(|| {
            panic!(
                "{} did not exit within the drain timeout; log:\n{}",
                p.name,
                p.log_text()
            )
        });
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            p.name,
            p.log_text()
        );
    }
}

#[test]
fn all_in_one_runs_the_four_services() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<Ports> = (0..4).map(|_| Ports::free()).collect();
    let mut env = Vec::new();
    for ((name, _), p) in SERVICES.iter().zip(&ports) {
        env.extend(service_env(name, *p, dir.path()));
    }
    let mut proc = Proc::start("data-processor", "data-processor", dir.path(), &[], &env);
    for ((name, service), p) in SERVICES.iter().zip(&ports) {
        wait_healthy(&proc, p.http);
        check_grpc_surface(name, service, *p);
    }
    // The co-located workers registered with the co-located scheduler.
    let ok = wait_until(Duration::from_secs(5), || {
        let out = run_grpcurl(&[
            "-plaintext",
            &ports[0].grpc_addr(),
            "dataprocessor.v1.Admin/GetStatus",
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["workers"].as_array().map(|w| w.len()))
            == Some(3)
    });
    assert!(ok, "workers did not register; log:\n{}", proc.log_text());
    proc.terminate();
    let status = proc
        .wait_timeout(Duration::from_secs(7))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
}
