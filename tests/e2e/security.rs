//! Security of every gRPC port, end to end, with the real binaries, real sockets, real
//! grpcurl and certificates generated at test time (rcgen):
//!
//! - TLS: a plain-text client gets nothing from a TLS port; grpcurl with `-cacert` works.
//! - Mutual TLS: a client without a certificate is refused; the workers' certificates
//!   complete real tasks; an operator's certificate (from the same CA) cannot call
//!   CompleteTask.
//! - A replaced certificate file is served without a restart.
//! - Admin tokens: every role against every admin RPC (a table), a missing and a wrong token.
//! - Limits: oversize messages, keys, values and pages are refused naming the limit and
//!   change nothing.
//! - Secrets (admin tokens, the S3 secret key) never reach logs, exported spans or errors.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tests::data::DataCluster;
use tests::{Ports, Proc, bin, run_grpcurl, service_env, wait_healthy, wait_until};

/// The DNS name that makes a certificate a service certificate (the default of
/// `server.tls.worker_names`).
const SERVICE_NAME: &str = "worker.data-processor.internal";

/// A test CA that writes its certificate and the leaves it signs into a directory.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    cert: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_owned(),
            cert: path,
        }
    }

    /// A leaf for `names` (DNS names or IP addresses) usable as server and client
    /// certificate; returns (cert, key) paths `<file>.pem`, `<file>.key`.
    fn leaf(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let (c, k) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        // Key first: a reader that sees the new certificate finds its key already there.
        std::fs::write(&k, key.serialize_pem()).unwrap();
        std::fs::write(&c, cert.pem()).unwrap();
        (c, k)
    }

    /// The certificate every service of a test cluster uses: valid for the loopback
    /// address they dial and carrying the service name.
    fn service_leaf(&self, file: &str) -> (PathBuf, PathBuf) {
        self.leaf(file, &["127.0.0.1", "localhost", SERVICE_NAME])
    }
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// Environment that turns on TLS (and mutual TLS with `client_ca`) for a service.
fn tls_env(cert: &Path, key: &Path, ca: &Path, mutual: bool) -> Vec<(String, String)> {
    let mut env = vec![
        ("DP__SERVER__TLS__CERT".to_owned(), p(cert)),
        ("DP__SERVER__TLS__KEY".to_owned(), p(key)),
        ("DP__SERVER__TLS__CA".to_owned(), p(ca)),
    ];
    if mutual {
        env.push(("DP__SERVER__TLS__CLIENT_CA".to_owned(), p(ca)));
    }
    env
}

fn ok(out: &Output) -> bool {
    out.status.success()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The gRPC code grpcurl reports ("OK" on success).
fn grpc_code(out: &Output) -> String {
    if out.status.success() {
        return "OK".into();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.trim().strip_prefix("Code: "))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("no status: {err}"))
}

/// grpcurl with `input` on its stdin (for `-d @`).
fn grpcurl_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = std::process::Command::new(tests::grpcurl())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

/// `storage-admin` with `args` and extra environment.
fn storage_admin(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = std::process::Command::new(bin("storage-admin"));
    for (k, _) in std::env::vars() {
        if k.starts_with("DP_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// A scheduler process with `env` on top of the test defaults.
fn scheduler(dir: &Path, env: Vec<(String, String)>) -> (Proc, Ports) {
    let ports = Ports::free();
    let mut full = service_env("scheduler", ports, dir);
    full.extend(env);
    let proc = Proc::start("scheduler", "scheduler", dir, &[], &full);
    wait_healthy(&proc, ports.http);
    (proc, ports)
}

#[test]
fn tls_port_refuses_plain_text_and_serves_grpcurl_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let (cert, key) = ca.service_leaf("scheduler");
    let (_proc, ports) = scheduler(dir.path(), tls_env(&cert, &key, &ca.cert, false));
    let addr = ports.grpc_addr();

    let plain = run_grpcurl(&["-plaintext", &addr, "list"]);
    assert!(
        !ok(&plain),
        "plain text must fail on a TLS port: {}",
        text(&plain)
    );
    let untrusted = run_grpcurl(&[&addr, "list"]);
    assert!(
        !ok(&untrusted),
        "a server not signed by a trusted CA: {}",
        text(&untrusted)
    );

    let listed = run_grpcurl(&["-cacert", &p(&ca.cert), &addr, "list"]);
    assert!(ok(&listed), "grpcurl -cacert: {}", text(&listed));
    assert!(
        text(&listed).contains("dataprocessor.v1.Admin"),
        "{}",
        text(&listed)
    );
    let status = run_grpcurl(&[
        "-cacert",
        &p(&ca.cert),
        &addr,
        "dataprocessor.v1.Admin/GetStatus",
    ]);
    assert!(ok(&status), "GetStatus over TLS: {}", text(&status));

    // storage-admin: plain text fails (unreachable, exit 3), --ca works.
    let plain = storage_admin(&["--scheduler", &addr, "tables", "list"], &[]);
    assert!(!ok(&plain), "{}", text(&plain));
    let created = storage_admin(
        &[
            "--scheduler",
            &addr,
            "--ca",
            &p(&ca.cert),
            "tables",
            "create",
            "t1",
        ],
        &[],
    );
    assert!(ok(&created), "{}", text(&created));
    let listed = storage_admin(
        &["--scheduler", &addr, "tables", "list", "--json"],
        &[("DP__SERVER__TLS__CA", p(&ca.cert))],
    );
    assert!(
        ok(&listed) && text(&listed).contains("\"t1\""),
        "{}",
        text(&listed)
    );
}

#[test]
fn mutual_tls_workers_complete_tasks_and_an_operator_certificate_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let (cert, key) = ca.service_leaf("service");
    let (admin_cert, admin_key) = ca.leaf("operator", &["operator.example"]);
    let env = tls_env(&cert, &key, &ca.cert, true);
    let env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut c = DataCluster::start(dir.path(), &env_ref);
    c.start_flusher();
    c.admin_env = vec![
        ("DP__SERVER__TLS__CA".into(), p(&ca.cert)),
        ("DP__SERVER__TLS__CERT".into(), p(&admin_cert)),
        ("DP__SERVER__TLS__KEY".into(), p(&admin_key)),
    ];
    c.create_tables(&["t"]);
    for i in 0..20 {
        let o = c.admin(&["put", "t", &format!("k{i:02}"), "v"]);
        assert_eq!(o.code, 0, "put: {}", o.stderr);
    }
    // The replayer, the flusher and the scheduler talk over mutual TLS with their service
    // certificate: the flush is dispatched, read from the replayer and completed.
    c.wait_flushed("t", 20, Duration::from_secs(60));
    assert!(!c.files("t").is_empty(), "the flush committed files");
    assert_eq!(c.scan_all("t").len(), 20);

    let addr = c.admin_addr();
    let complete = r#"{"task_id": 1, "attempt": 1, "worker_id": 1}"#;
    let call = |extra: &[&str]| {
        let mut args = vec!["-cacert".to_owned(), p(&ca.cert)];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend([
            "-d".into(),
            complete.into(),
            addr.clone(),
            "dataprocessor.v1.Scheduler/CompleteTask".into(),
        ]);
        run_grpcurl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // No client certificate: the handshake is refused.
    let none = call(&[]);
    let code = grpc_code(&none);
    assert!(
        !ok(&none) && (code == "Unavailable" || code.starts_with("no status")),
        "refused by the TLS layer, not by a handler: {}",
        text(&none)
    );
    // The operator's certificate is from the same CA but is not a service certificate.
    let operator = call(&["-cert", &p(&admin_cert), "-key", &p(&admin_key)]);
    assert_eq!(
        grpc_code(&operator),
        "PermissionDenied",
        "{}",
        text(&operator)
    );
    assert!(
        text(&operator).contains("worker_names"),
        "{}",
        text(&operator)
    );
    // A service certificate gets past the check to the handler (which refuses the bogus
    // completion on its merits).
    let service = call(&["-cert", &p(&cert), "-key", &p(&key)]);
    let code = grpc_code(&service);
    assert!(
        code != "PermissionDenied" && code != "Unauthenticated" && !code.starts_with("no status"),
        "{}",
        text(&service)
    );
    // storage-admin without a client certificate cannot reach the admin API.
    let no_cert = storage_admin(
        &["--scheduler", &addr, "--ca", &p(&ca.cert), "tables", "list"],
        &[],
    );
    assert!(!ok(&no_cert), "{}", text(&no_cert));
}

#[test]
fn the_all_in_one_binary_runs_on_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "main");
    let (cert, key) = ca.service_leaf("service");
    let ports: Vec<Ports> = (0..4).map(|_| Ports::free()).collect();
    let mut env = Vec::new();
    for (name, p) in ["scheduler", "replayer", "flusher", "compactor"]
        .iter()
        .zip(&ports)
    {
        env.extend(service_env(name, *p, dir.path()));
    }
    env.extend(tls_env(&cert, &key, &ca.cert, true));
    let proc = Proc::start("data-processor", "data-processor", dir.path(), &[], &env);
    for p in &ports {
        wait_healthy(&proc, p.http);
    }
    // The co-located workers registered with the scheduler over mutual TLS.
    let registered = wait_until(Duration::from_secs(20), || {
        let out = run_grpcurl(&[
            "-cacert",
            &p(&ca.cert),
            "-cert",
            &p(&cert),
            "-key",
            &p(&key),
            &ports[0].grpc_addr(),
            "dataprocessor.v1.Admin/GetStatus",
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["workers"].as_array().map(|w| w.len()))
            == Some(3)
    });
    assert!(
        registered,
        "workers did not register; log:\n{}",
        proc.log_text()
    );
}

#[test]
fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = Ca::new(dir.path(), "old");
    let new_ca = Ca::new(dir.path(), "new");
    let (cert, key) = old_ca.service_leaf("scheduler");
    let (proc, ports) = scheduler(dir.path(), tls_env(&cert, &key, &old_ca.cert, false));
    let addr = ports.grpc_addr();
    let list = |ca: &Path| run_grpcurl(&["-cacert", &p(ca), &addr, "list"]);
    assert!(ok(&list(&old_ca.cert)));
    assert!(!ok(&list(&new_ca.cert)));

    // Rotate: the same file names, a certificate from another CA.
    let (new_cert, new_key) = new_ca.service_leaf("rotated");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let served = wait_until(Duration::from_secs(30), || ok(&list(&new_ca.cert)));
    assert!(
        served,
        "the new certificate was not served; log:\n{}",
        proc.log_text()
    );
    assert!(
        !ok(&list(&old_ca.cert)),
        "the old certificate is no longer served"
    );
    assert!(proc.log_text().contains("TLS certificate files changed"));
}

/// Admin RPCs, a request body for each, and the weakest role allowed to call it.
const ADMIN_RPCS: &[(&str, &str, &str)] = &[
    ("GetStatus", "{}", "viewer"),
    ("GetQueueStatus", "{}", "viewer"),
    ("ListTasks", "{}", "viewer"),
    ("GetTask", r#"{"task_id": 1}"#, "viewer"),
    ("ListTables", "{}", "viewer"),
    ("GetManifest", r#"{"table": "t"}"#, "viewer"),
    ("GetTableStats", r#"{"table": "t"}"#, "viewer"),
    ("GetStallForecast", "{}", "viewer"),
    ("PlanCompaction", r#"{"table": "t"}"#, "viewer"),
    ("ListQuarantined", "{}", "viewer"),
    ("CancelTask", r#"{"task_id": 999999}"#, "operator"),
    ("TriggerCompaction", r#"{"table": "t"}"#, "operator"),
    ("TriggerFlush", r#"{"table": "t"}"#, "operator"),
    ("TriggerWalReplay", r#"{"table": "t"}"#, "operator"),
    ("ReleaseQuarantined", r#"{"table": "t"}"#, "operator"),
    ("CreateTable", r#"{"name": "created"}"#, "admin"),
    ("DropTable", r#"{"name": "no_such_table"}"#, "admin"),
];

const ROLES: [&str; 3] = ["viewer", "operator", "admin"];

fn sha256_hex(s: &str) -> String {
    runtime::auth::token_hash(s)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn every_role_against_every_admin_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let tokens_file = dir.path().join("tokens");
    let token = |role: &str| format!("{role}-token-0123456789");
    let lines: Vec<String> = ROLES
        .iter()
        .map(|r| format!("{} {r}  # {r}", sha256_hex(&token(r))))
        .collect();
    std::fs::write(&tokens_file, lines.join("\n")).unwrap();
    let (proc, ports) = scheduler(
        dir.path(),
        vec![("DP__ADMIN__TOKENS_FILE".into(), p(&tokens_file))],
    );
    let addr = ports.grpc_addr();
    let call = |method: &str, body: &str, bearer: Option<String>| {
        let mut args = vec!["-plaintext".to_owned()];
        if let Some(b) = bearer {
            args.extend(["-H".into(), format!("authorization: Bearer {b}")]);
        }
        args.extend([
            "-d".into(),
            body.into(),
            addr.clone(),
            format!("dataprocessor.v1.Admin/{method}"),
        ]);
        run_grpcurl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let rank = |r: &str| ROLES.iter().position(|x| *x == r).unwrap();
    let mut failures = Vec::new();
    for (method, body, needed) in ADMIN_RPCS {
        // (who, bearer, expected: Some(code) or None = past the auth check)
        let mut callers: Vec<(String, Option<String>, Option<&str>)> = vec![
            ("no token".into(), None, Some("Unauthenticated")),
            (
                "wrong token".into(),
                Some("not-a-token".into()),
                Some("Unauthenticated"),
            ),
        ];
        for role in ROLES {
            let expected = (rank(role) < rank(needed)).then_some("PermissionDenied");
            callers.push((role.to_owned(), Some(token(role)), expected));
        }
        for (who, bearer, expected) in callers {
            let out = call(method, body, bearer);
            let code = grpc_code(&out);
            let fine = match expected {
                Some(want) => code == want,
                None => {
                    !matches!(code.as_str(), "Unauthenticated" | "PermissionDenied")
                        && !code.starts_with("no status")
                }
            };
            if !fine {
                failures.push(format!(
                    "{method} as {who}: got {code}, expected {}: {}",
                    expected.unwrap_or("to pass the auth check"),
                    text(&out)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // A weak role is told which role it needs.
    let denied = call("DropTable", r#"{"name": "x"}"#, Some(token("viewer")));
    assert!(
        text(&denied).contains("needs role admin"),
        "{}",
        text(&denied)
    );
    // storage-admin sends its token: flag, environment or file.
    let addr = ports.grpc_addr();
    let o = storage_admin(&["--scheduler", &addr, "tables", "list"], &[]);
    assert_eq!(o.status.code(), Some(1), "no token: {}", text(&o));
    assert!(text(&o).contains("authorization"), "{}", text(&o));
    let o = storage_admin(
        &[
            "--scheduler",
            &addr,
            "--token",
            &token("admin"),
            "tables",
            "create",
            "cli",
        ],
        &[],
    );
    assert!(ok(&o), "{}", text(&o));
    let o = storage_admin(
        &["--scheduler", &addr, "tables", "drop", "cli"],
        &[("DP_ADMIN_TOKEN", token("operator"))],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "operator cannot drop: {}",
        text(&o)
    );
    let token_file = dir.path().join("my-token");
    std::fs::write(&token_file, format!("{}\n", token("viewer"))).unwrap();
    let o = storage_admin(
        &[
            "--scheduler",
            &addr,
            "--token-file",
            &p(&token_file),
            "tables",
            "list",
            "--json",
        ],
        &[],
    );
    assert!(ok(&o) && text(&o).contains("\"cli\""), "{}", text(&o));

    // The tokens file is re-read when it changes: a new token works and a removed one
    // stops working, without a restart.
    let rotated = "rotated-token-0123456789";
    std::fs::write(&tokens_file, format!("{} admin\n", sha256_hex(rotated))).unwrap();
    let picked_up = wait_until(Duration::from_secs(20), || {
        grpc_code(&call("ListTables", "{}", Some(rotated.to_owned()))) == "OK"
    });
    assert!(
        picked_up,
        "the new token was not accepted; log:\n{}",
        proc.log_text()
    );
    let revoked = call("ListTables", "{}", Some(token("viewer")));
    assert_eq!(grpc_code(&revoked), "Unauthenticated", "{}", text(&revoked));
    drop(proc);
}

/// This machine's first non-loopback IPv4 address (None when it has none).
fn non_loopback_ipv4() -> Option<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .map(str::to_owned)
}

#[test]
fn without_tokens_the_admin_api_answers_loopback_only() {
    let Some(ip) = non_loopback_ipv4() else {
        eprintln!("skipped: this machine has no non-loopback IPv4 address");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (proc, ports) = scheduler(
        dir.path(),
        vec![("DP__SERVER__HOST".into(), "0.0.0.0".into())],
    );
    let status = |host: &str| {
        run_grpcurl(&[
            "-plaintext",
            &format!("{host}:{}", ports.grpc),
            "dataprocessor.v1.Admin/GetStatus",
        ])
    };
    let local = status("127.0.0.1");
    assert!(ok(&local), "{}", text(&local));
    let remote = status(&ip);
    assert_eq!(grpc_code(&remote), "Unauthenticated", "{}", text(&remote));
    assert!(text(&remote).contains("loopback"), "{}", text(&remote));
    // Health stays open to probes from anywhere.
    let health = run_grpcurl(&[
        "-plaintext",
        &format!("{ip}:{}", ports.grpc),
        "grpc.health.v1.Health/Check",
    ]);
    assert!(ok(&health), "{}", text(&health));
    assert!(
        proc.log_text().contains("admin.tokens is empty"),
        "the warning at start"
    );
}

#[test]
fn oversize_messages_keys_values_and_pages_are_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &[]);
    c.create_tables(&["t"]);
    let o = c.admin(&["put", "t", "k", "v"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    c.start_flusher();
    let before = c.admin_json(&["tables", "list"]);

    // A message over server.max_message_size (default 4 MiB), sent from stdin.
    let body = format!(r#"{{"name": "{}"}}"#, "x".repeat(5 << 20));
    let out = grpcurl_stdin(
        &[
            "-plaintext",
            "-d",
            "@",
            &c.admin_addr(),
            "dataprocessor.v1.Admin/CreateTable",
        ],
        &body,
    );
    assert_eq!(grpc_code(&out), "ResourceExhausted", "{}", text(&out));
    assert!(
        text(&out).contains("4194304"),
        "names the limit: {}",
        text(&out)
    );

    // A key over the key size limit: refused before anything is written.
    let long_key = "k".repeat(runtime::limits::MAX_KEY_BYTES + 1);
    let o = c.admin(&["put", "t", &long_key, "v"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("key size limit of 65536"), "{}", o.stderr);
    // ... and on the replayer's read path.
    let replayer = c.replayer_ports.grpc_addr();
    let out = run_grpcurl(&[
        "-plaintext",
        "-d",
        &format!(
            r#"{{"table": "t", "key": "{}"}}"#,
            "a".repeat(4 * (runtime::limits::MAX_KEY_BYTES / 3 + 1))
        ),
        &replayer,
        "dataprocessor.v1.Replayer/Get",
    ]);
    assert_eq!(grpc_code(&out), "InvalidArgument", "{}", text(&out));
    assert!(text(&out).contains("key size limit"), "{}", text(&out));

    // A value over the value size limit (the load generator; a single argument cannot
    // carry 16 MiB).
    let o = c.admin(&[
        "load",
        "t",
        "--keys",
        "1",
        "--value-size",
        &(runtime::limits::MAX_VALUE_BYTES + 1).to_string(),
    ]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("16777216"), "{}", o.stderr);

    // Pages over their limits.
    let out = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"page_size": 5000}"#,
        &c.admin_addr(),
        "dataprocessor.v1.Admin/ListTasks",
    ]);
    assert_eq!(grpc_code(&out), "InvalidArgument", "{}", text(&out));
    assert!(text(&out).contains("1000"), "{}", text(&out));
    let out = run_grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"table": "t", "limit": 20000}"#,
        &replayer,
        "dataprocessor.v1.Replayer/Scan",
    ]);
    assert_eq!(grpc_code(&out), "InvalidArgument", "{}", text(&out));
    assert!(
        text(&out).contains("page size limit of 10000"),
        "{}",
        text(&out)
    );

    // A list over its limit: a task result with too many files.
    let files = vec!["{}"; runtime::limits::MAX_LIST_LEN + 1].join(",");
    let out = run_grpcurl(&[
        "-plaintext",
        "-d",
        &format!(
            r#"{{"task_id": 1, "attempt": 1, "result": {{"flush": {{"files": [{files}]}}}}}}"#
        ),
        &c.admin_addr(),
        "dataprocessor.v1.Scheduler/CompleteTask",
    ]);
    assert_eq!(grpc_code(&out), "InvalidArgument", "{}", text(&out));
    assert!(
        text(&out).contains("list size limit of 10000"),
        "{}",
        text(&out)
    );

    // Nothing changed: the same tables, the one key.
    let after = c.admin_json(&["tables", "list"]);
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&before), names(&after));
    assert_eq!(c.scan_all("t").len(), 1);
}

/// An OTLP receiver that keeps the text of everything exported to it.
#[derive(Clone, Default)]
struct Exported(Arc<Mutex<String>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Exported
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        let text = format!("{:?}\n{:?}", request.metadata(), request.get_ref());
        self.0.lock().unwrap().push_str(&text);
        Ok(tonic::Response::new(Default::default()))
    }
}

/// A cluster on S3 with admin tokens, debug logs and trace export: flushes sign S3 requests
/// with the secret key, storage-admin and grpcurl send right and wrong tokens to the
/// scheduler and the replayer; afterwards no log line, exported span or client output
/// holds a token or the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_the_s3_secret_never_reach_logs_spans_or_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let exported = Exported::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                    exported.clone(),
                ),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let dir = tempfile::tempdir().unwrap();
    let admin_token = "adm-SENTINEL-token-4f1c2b";
    let wrong_token = "wrong-SENTINEL-token-9a8b7c";
    let s3_secret = "s3-SENTINEL-secret-77e1d0";
    let tokens_file = dir.path().join("tokens");
    std::fs::write(&tokens_file, format!("{} admin\n", sha256_hex(admin_token))).unwrap();
    let (c, outputs, m) = tokio::task::block_in_place(|| {
        let m = tests::moto::Moto::start();
        let endpoint = m.endpoint();
        let tokens = p(&tokens_file);
        let env: Vec<(&str, &str)> = vec![
            ("DP__STORAGE__URL", "s3://dp-e2e/secrets"),
            ("DP__STORAGE__S3__ENDPOINT", &endpoint),
            ("DP__STORAGE__S3__REGION", "us-east-1"),
            ("DP__STORAGE__S3__ALLOW_HTTP", "true"),
            ("DP__ADMIN__TOKENS_FILE", &tokens),
            ("DP__TELEMETRY__OTLP_ENDPOINT", &otlp),
            ("DP__TELEMETRY__LOG_LEVEL", "debug"),
            ("AWS_ACCESS_KEY_ID", "AKIDTEST"),
            ("AWS_SECRET_ACCESS_KEY", s3_secret),
            ("AWS_REGION", "us-east-1"),
        ];
        let mut c = DataCluster::start(dir.path(), &env);
        c.admin_env = vec![
            ("DP_ADMIN_TOKEN".into(), admin_token.into()),
            ("AWS_ACCESS_KEY_ID".into(), "AKIDTEST".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), s3_secret.into()),
            ("AWS_REGION".into(), "us-east-1".into()),
            ("AWS_ENDPOINT".into(), endpoint.clone()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
        ];
        c.start_flusher();
        c.create_tables(&["t"]);
        for i in 0..10 {
            let o = c.admin(&["put", "t", &format!("k{i}"), "v"]);
            assert_eq!(o.code, 0, "put on s3: {}", o.stderr);
        }
        c.wait_flushed("t", 10, Duration::from_secs(60));
        assert_eq!(
            c.scan_all("t").len(),
            10,
            "scan through the replayer with the token"
        );
        let mut outputs = String::new();
        let addr = c.admin_addr();
        for args in [
            vec!["status"],
            vec!["--token", wrong_token, "tables", "list"],
            vec!["--token", wrong_token, "tables", "drop", "t"],
            vec!["--token", wrong_token, "get", "t", "k1"],
        ] {
            let mut full = vec!["--scheduler", addr.as_str()];
            full.extend(args);
            let env: Vec<(&str, String)> = c
                .admin_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            outputs.push_str(&text(&storage_admin(&full, &env)));
        }
        for (target, method) in [
            (addr.clone(), "dataprocessor.v1.Admin/ListTables"),
            (
                c.replayer_ports.grpc_addr(),
                "dataprocessor.v1.Replayer/GetStatus",
            ),
        ] {
            let out = run_grpcurl(&[
                "-plaintext",
                "-H",
                &format!("authorization: Bearer {wrong_token}"),
                &target,
                method,
            ]);
            assert_eq!(
                grpc_code(&out),
                "Unauthenticated",
                "{method}: {}",
                text(&out)
            );
            outputs.push_str(&text(&out));
        }
        (c, outputs, m)
    });
    assert!(
        outputs.contains("not valid"),
        "the wrong token was refused: {outputs}"
    );
    // Spans are exported in batches: wait until the flush's completion arrived.
    let arrived = tokio::task::block_in_place(|| {
        wait_until(Duration::from_secs(30), || {
            let spans = exported.0.lock().unwrap();
            spans.contains("CompleteTask") && spans.contains("ListTables")
        })
    });
    assert!(arrived, "spans were not exported");
    let mut logs = String::new();
    for proc in [&c.sched, &c.replayer]
        .into_iter()
        .chain(c.flushers.iter())
        .flatten()
    {
        logs.push_str(&proc.log_text());
    }
    assert!(logs.contains("DEBUG"), "debug logging was on");
    let spans = exported.0.lock().unwrap().clone();
    for secret in [admin_token, wrong_token, s3_secret, "SENTINEL"] {
        assert!(!logs.contains(secret), "a log holds {secret}");
        assert!(!spans.contains(secret), "exported spans hold {secret}");
        assert!(
            !outputs.contains(secret),
            "storage-admin or grpcurl output holds {secret}"
        );
    }
    drop(c);
    drop(m);
}
