//! Configuration, through the real binaries: every bad value exits with code 64 and one
//! line naming the key; the environment beats the file; the seed's `-config=FILE` works.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::process::Command;
use std::time::Duration;

use tests::{Ports, Proc, bin, http_get, service_env, wait_healthy};

fn run_with_config(yaml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut cmd = Command::new(bin("flusher"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DP__") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_bad_value_exits_64_naming_the_key() {
    type Env = &'static [(&'static str, &'static str)];
    let cases: &[(&str, Env, &str)] = &[
        ("compaction:\n  strategy: fastest\n", &[], "strategy"),
        (
            "memtable_flush:\n  flush_threshold: 1.2\n",
            &[],
            "memtable_flush.flush_threshold",
        ),
        (
            "memtable_flush:\n  flush_threshold: 0\n",
            &[],
            "memtable_flush.flush_threshold",
        ),
        (
            "memtable_flush:\n  max_memtable_size: 64XB\n",
            &[],
            "max_memtable_size",
        ),
        (
            "compaction:\n  target_file_size: big\n",
            &[],
            "target_file_size",
        ),
        ("processor:\n  wroker_count: 4\n", &[], "wroker_count"),
        ("bogus_section:\n  x: 1\n", &[], "bogus_section"),
        (
            "",
            &[("DP__MEMTABLE_FLUSH__FLUSH_THRESHOLD", "2.5")],
            "memtable_flush.flush_threshold",
        ),
        ("", &[("DP__COMPACTION__STRATEGY", "random")], "strategy"),
    ];
    for (yaml, env, key) in cases {
        let (code, stderr) = run_with_config(yaml, env);
        assert_eq!(
            code, 64,
            "config {yaml:?} {env:?}: exit code {code}, stderr: {stderr}"
        );
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line for {yaml:?} {env:?}, got:\n{stderr}"
        );
        assert!(
            lines[0].contains(key),
            "message {:?} does not name {key}",
            lines[0]
        );
    }
}

#[test]
fn a_missing_config_file_exits_64() {
    let out = Command::new(bin("flusher"))
        .args(["--config", "/nonexistent/dp.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dp.yaml"));
}

#[test]
fn environment_beats_the_file_and_seed_flag_form_works() {
    let dir = tempfile::tempdir().unwrap();
    let file_ports = Ports::free();
    let env_ports = Ports::free();
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  flusher:\n    grpc_port: {}\n    http_port: {}\nscheduler:\n  endpoint: http://127.0.0.1:1\n",
        file_ports.grpc, file_ports.http
    );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let mut env = service_env("flusher", env_ports, dir.path());
    env.retain(|(k, _)| k.starts_with("DP__SERVER__FLUSHER"));
    let flag = format!("-config={}", path.display());
    let mut p = Proc::start("flusher", "flusher", dir.path(), &[&flag], &env);
    wait_healthy(&p, env_ports.http);
    assert!(
        http_get(file_ports.http, "/health").is_err(),
        "the file's port must be overridden"
    );
    // Not ready: the scheduler endpoint from the file is unreachable.
    assert_eq!(http_get(env_ports.http, "/ready").unwrap().0, 503);
    p.terminate();
    assert!(
        p.wait_timeout(Duration::from_secs(15))
            .is_some_and(|s| s.success())
    );
}
