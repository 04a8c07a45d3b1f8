//! The deployment files agree with the code. Whatever deploy/, docker-compose.yml and the
//! Helm chart say about config keys, ports and binaries is checked here against the real
//! config schema (`runtime::Config`, loaded with `Config::load_with_env`, so an unknown key
//! fails), the defaults of `runtime::config::ServerConfig`, the metric names of
//! `runtime::metrics` and the workspace's binaries (`cargo metadata`).
//!
//! The chart is rendered with the real `helm` (`make deploy-tools` installs it; `$HELM`
//! overrides), and every rendered pod's effective config -- its ConfigMap plus its DP__
//! environment -- is loaded like the binary would load it. `make deploy-check`
//! (deploy/check.sh) covers what needs the other tools: lint, Kubernetes schemas,
//! docker-compose, yamllint, hadolint, promtool.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use runtime::config::{Config, PortsConfig, ServerConfig, ServiceKind};
use serde::Deserialize;
use serde_json::Value;

/// The operator CLI. A later issue adds crate crates/admin with this binary; until then the
/// Dockerfile lists it and its copy step skips it when it was not built. Once it exists,
/// the equality below holds without this exception.
const PENDING_BINARY: &str = "storage-admin";

/// Keys the Helm chart sets itself (from `<component>.ports`, `storage.*`, the scheduler's
/// Service); the values schema must not offer them under `config`.
const CHART_OWNED_KEYS: &[&str] = &[
    "server.host",
    "server.advertised_host",
    "server.scheduler.",
    "server.replayer.",
    "server.flusher.",
    "server.compactor.",
    "storage.",
    "catalog.path",
    "scheduler.endpoint",
    "server.tls.",
    "admin.",
];

/// Stands in for `$(POD_IP)` when a pod's environment is loaded.
const POD_IP: &str = "192.0.2.10";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// YAML (merge keys applied) as JSON.
fn yaml_value(text: &str, what: &str) -> Value {
    let mut v: serde_norway::Value =
        serde_norway::from_str(text).unwrap_or_else(|e| panic!("{what}: {e}"));
    v.apply_merge().unwrap();
    serde_json::to_value(v).unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Every document of a multi-document YAML stream, empty ones left out.
fn yaml_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            let mut v = serde_norway::Value::deserialize(doc).unwrap();
            v.apply_merge().unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Dotted paths of the leaves of a JSON tree (objects are descended, anything else is a
/// leaf; an empty object is a leaf too).
fn leaf_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaf_paths(child, &p, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

/// Every key of the config schema, from the serialized defaults: `processor.worker_count`,
/// `server.flusher.advertised_address`, ...
fn config_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    leaf_paths(
        &serde_json::to_value(Config::default()).unwrap(),
        "",
        &mut keys,
    );
    keys
}

/// `DP__SERVER__FLUSHER__ADVERTISED_ADDRESS` -> `server.flusher.advertised_address`, the
/// mapping `Config::load` applies (prefix `DP`, separator `__`, keys lowercased).
fn env_to_key(name: &str) -> Option<String> {
    name.strip_prefix("DP__").map(|rest| {
        rest.split("__")
            .collect::<Vec<_>>()
            .join(".")
            .to_lowercase()
    })
}

fn assert_env_names_real_key(name: &str, keys: &BTreeSet<String>, whence: &str) {
    let key = env_to_key(name).unwrap();
    assert!(
        keys.contains(&key),
        "{whence}: {name} maps to `{key}`, which is not a config key (see crates/runtime/src/config.rs)"
    );
}

/// The `DP__...` names mentioned in `text`.
fn dp_env_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("DP__") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn default_ports(kind: ServiceKind) -> PortsConfig {
    ServerConfig::default().ports(kind).clone()
}

fn kind_named(name: &str) -> ServiceKind {
    *ServiceKind::ALL
        .iter()
        .find(|k| k.name() == name)
        .unwrap_or_else(|| panic!("{name} is not a service"))
}

/// Loads `file` with `env` exactly as a binary would (defaults -> file -> DP__ variables,
/// validated), ignoring this process's environment.
fn load(file: &Path, env: &BTreeMap<String, String>, whence: &str) -> Config {
    Config::load_with_env(Some(file), env.clone())
        .unwrap_or_else(|e| panic!("{whence}: {} does not load: {e}", file.display()))
}

fn yaml_files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files_under(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_config_example_loads_and_keeps_the_default_ports() {
    let mut files = Vec::new();
    yaml_files_under(&root().join("deploy/config"), &mut files);
    files.sort();
    assert!(
        files.len() >= 7,
        "expected the all-in-one, container, S3 and four compose examples, found {files:?}"
    );
    for file in &files {
        let cfg = load(file, &BTreeMap::new(), "config example");
        for kind in ServiceKind::ALL {
            let (got, want) = (cfg.server.ports(kind), default_ports(kind));
            assert_eq!(
                (got.grpc_port, got.http_port),
                (want.grpc_port, want.http_port),
                "{}: {kind} ports differ from ServerConfig::default()",
                file.display()
            );
        }
    }
    // The S3 example really is one.
    let s3 = load(
        &root().join("deploy/config/s3-minio.yaml"),
        &BTreeMap::new(),
        "s3",
    );
    assert!(s3.storage.url.starts_with("s3://"), "{}", s3.storage.url);
    assert!(s3.storage.s3.allow_http && !s3.storage.s3.endpoint.is_empty());
}

/// `${NAME:-default}` -> default, `${NAME}` -> "", `$$` -> `$`: compose's interpolation
/// with nothing set, so the check does not depend on this machine's environment.
fn interpolate(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let end = t.find('}').unwrap();
            let expr = &t[..end];
            if let Some((_, default)) = expr.split_once(":-") {
                out.push_str(default);
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn docker_compose_agrees_with_the_config() {
    let compose = yaml_value(&read("docker-compose.yml"), "docker-compose.yml");
    let services = compose["services"].as_object().unwrap();
    let keys = config_keys();
    let sched = default_ports(ServiceKind::Scheduler);

    for kind in ServiceKind::ALL {
        let name = kind.name();
        let svc = services
            .get(name)
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"));
        let whence = format!("docker-compose.yml services.{name}");
        assert_eq!(
            str_list(&svc["command"]),
            [name],
            "{whence}: runs the wrong binary"
        );

        // Its environment: every DP__ variable is a real key.
        let mut env = BTreeMap::new();
        for (k, v) in svc["environment"].as_object().unwrap() {
            let v = interpolate(v.as_str().unwrap_or(&v.to_string()));
            if k.starts_with("DP__") {
                assert_env_names_real_key(k, &keys, &whence);
            }
            env.insert(k.clone(), v);
        }

        // Its config file, loaded with that environment: the container's effective config.
        let volumes = str_list(&svc["volumes"]);
        let config_mount = volumes
            .iter()
            .find_map(|v| {
                let parts: Vec<&str> = v.split(':').collect();
                (parts.get(1) == Some(&"/etc/data-processor/config.yaml")).then(|| parts[0])
            })
            .unwrap_or_else(|| panic!("{whence}: mounts no /etc/data-processor/config.yaml"));
        let file = root().join(config_mount.trim_start_matches("./"));
        let cfg = load(&file, &env, &whence);

        let want = default_ports(kind);
        let got = cfg.server.ports(kind);
        assert_eq!(
            (got.grpc_port, got.http_port),
            (want.grpc_port, want.http_port),
            "{whence}: effective ports differ from ServerConfig::default()"
        );
        let ports = str_list(&svc["ports"]);
        for p in [want.grpc_port, want.http_port] {
            assert!(
                ports.contains(&format!("{p}:{p}")),
                "{whence}: port {p} is not published as {p}:{p} ({ports:?})"
            );
        }
        let health = str_list(&svc["healthcheck"]["test"]);
        assert_eq!(
            health,
            ["CMD", "dp-healthcheck", &want.http_port.to_string()],
            "{whence}: health check"
        );

        // Shared storage volume; the catalog on its own volume, scheduler only.
        assert_eq!(
            cfg.storage.url, "file:///var/lib/data-processor/storage",
            "{whence}"
        );
        assert!(
            volumes.contains(&"storage:/var/lib/data-processor/storage".to_owned()),
            "{whence}: no shared storage volume"
        );
        let catalog_mount = format!("catalog:{}", cfg.catalog.path);
        assert_eq!(
            volumes.contains(&catalog_mount),
            kind == ServiceKind::Scheduler,
            "{whence}: only the scheduler mounts the catalog volume at catalog.path"
        );

        assert_eq!(
            cfg.telemetry.otlp_endpoint, "http://jaeger:4317",
            "{whence}: traces go to Jaeger"
        );

        if kind != ServiceKind::Scheduler {
            assert_eq!(
                got.advertised_address,
                format!("{name}:{}", want.grpc_port),
                "{whence}: a worker advertises its compose service name and gRPC port"
            );
            assert_eq!(
                cfg.scheduler.endpoint,
                format!("http://scheduler:{}", sched.grpc_port),
                "{whence}: scheduler endpoint"
            );
            assert_eq!(
                svc["depends_on"]["scheduler"]["condition"], "service_healthy",
                "{whence}: must wait for a healthy scheduler"
            );
        }
    }
    for extra in ["jaeger", "prometheus", "grafana", "minio", "minio-init"] {
        assert!(
            services.contains_key(extra),
            "docker-compose.yml: no {extra}"
        );
    }
    assert_eq!(services["minio"]["profiles"], serde_json::json!(["s3"]));

    // Prometheus scrapes every service's HTTP port under its compose name.
    let prom = yaml_value(&read("deploy/prometheus/prometheus.yml"), "prometheus.yml");
    let mut targets = BTreeSet::new();
    for job in prom["scrape_configs"].as_array().unwrap() {
        for sc in job["static_configs"].as_array().unwrap() {
            targets.extend(str_list(&sc["targets"]));
        }
    }
    let want: BTreeSet<String> = ServiceKind::ALL
        .iter()
        .map(|k| format!("{}:{}", k.name(), default_ports(*k).http_port))
        .collect();
    assert_eq!(targets, want, "deploy/prometheus/prometheus.yml targets");
}

#[test]
fn helm_values_and_schema_agree_with_the_config() {
    let values = yaml_value(&read("helm/data-processor/values.yaml"), "values.yaml");
    let keys = config_keys();

    for kind in ServiceKind::ALL {
        let want = default_ports(kind);
        let ports = &values[kind.name()]["ports"];
        assert_eq!(
            (ports["grpc"].as_u64(), ports["http"].as_u64()),
            (Some(want.grpc_port.into()), Some(want.http_port.into())),
            "values.yaml {}.ports differ from ServerConfig::default()",
            kind.name()
        );
    }

    // values.yaml `config`: real keys only, none the chart owns.
    let owned = |k: &str| {
        CHART_OWNED_KEYS
            .iter()
            .any(|o| k == *o || (o.ends_with('.') && k.starts_with(o)))
    };
    let mut in_values = BTreeSet::new();
    leaf_paths(&values["config"], "", &mut in_values);
    for k in &in_values {
        assert!(
            keys.contains(k),
            "values.yaml config.{k} is not a config key"
        );
        assert!(
            !owned(k),
            "values.yaml config.{k} is set by the chart itself"
        );
    }

    // values.schema.json `config`: exactly the config keys the chart does not own, so a
    // new config key is either offered by the chart or consciously owned by it.
    let schema: Value =
        serde_json::from_str(&read("helm/data-processor/values.schema.json")).unwrap();
    fn schema_keys(node: &Value, prefix: &str, out: &mut BTreeSet<String>) {
        match node.get("properties").and_then(Value::as_object) {
            Some(props) => {
                assert_eq!(
                    node["additionalProperties"],
                    Value::Bool(false),
                    "values.schema.json: config object `{prefix}` must reject unknown keys"
                );
                for (k, child) in props {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    schema_keys(child, &p, out);
                }
            }
            None => {
                out.insert(prefix.to_owned());
            }
        }
    }
    let mut in_schema = BTreeSet::new();
    schema_keys(&schema["properties"]["config"], "", &mut in_schema);
    let offered: BTreeSet<String> = keys.iter().filter(|k| !owned(k)).cloned().collect();
    assert_eq!(
        in_schema, offered,
        "values.schema.json `config` must list every config key except the chart-owned ones"
    );

    // The chart's README documents every value (Kubernetes objects passed through as they
    // are -- resources, security contexts -- as a whole).
    let readme = read("helm/data-processor/README.md");
    let mut all = BTreeSet::new();
    leaf_paths(&values, "", &mut all);
    let documented = |p: &str| {
        let segments: Vec<&str> = p.split('.').collect();
        (1..=segments.len()).any(|n| {
            let prefix = segments[..n].join(".");
            readme.contains(&format!("`{prefix}`"))
                && (n == segments.len()
                    || matches!(
                        segments[n - 1],
                        "resources" | "podSecurityContext" | "securityContext"
                    ))
        })
    };
    let missing: Vec<_> = all.iter().filter(|p| !documented(p)).collect();
    assert!(
        missing.is_empty(),
        "helm/data-processor/README.md does not list {missing:?}"
    );
}

fn helm() -> PathBuf {
    if let Some(p) = std::env::var_os("HELM") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = Path::new(&home).join(".cache/data-processor/tools/bin/helm");
        if p.is_file() {
            return p;
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("helm"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("helm not found: run `make deploy-tools` (or set $HELM)"))
}

fn helm_template(values_file: &str) -> Vec<Value> {
    let chart = root().join("helm/data-processor");
    let out = Command::new(helm())
        .args(["template", "dp"])
        .arg(&chart)
        .args(["--namespace", "data-processor", "-f"])
        .arg(chart.join(values_file))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template -f {values_file} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&String::from_utf8(out.stdout).unwrap())
}

/// What one rendered chart must satisfy, for every pod: its effective config loads, and
/// the container ports, probes, advertised address and Services agree with it.
fn check_rendered_chart(values_file: &str, s3: bool) {
    let docs = helm_template(values_file);
    let keys = config_keys();
    let whence = |what: &str| format!("helm template -f {values_file}: {what}");
    let of_kind =
        |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };

    let cms = of_kind("ConfigMap");
    assert_eq!(cms.len(), 1, "{}", whence("one ConfigMap"));
    let config_text = cms[0]["data"]["config.yaml"].as_str().unwrap();
    let lower = config_text.to_lowercase();
    assert!(
        !lower.contains("secret") && !lower.contains("access_key"),
        "{}",
        whence("the ConfigMap must hold no credentials")
    );
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yaml");
    std::fs::write(&config_file, config_text).unwrap();

    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .collect();
    assert_eq!(workloads.len(), 4, "{}", whence("four workloads"));
    for w in workloads {
        let name = w["metadata"]["name"].as_str().unwrap();
        let pod = &w["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{}", whence(name));
        let c = &containers[0];
        let component = str_list(&c["args"]);
        assert_eq!(component.len(), 1, "{}", whence(name));
        let kind = kind_named(&component[0]);
        let expected_kind = if matches!(kind, ServiceKind::Scheduler | ServiceKind::Replayer) {
            "StatefulSet"
        } else {
            "Deployment"
        };
        assert_eq!(w["kind"], expected_kind, "{}", whence(name));

        // The pod's environment: DP__ names are real keys; $(POD_IP) as the kubelet expands it.
        let mut env = BTreeMap::new();
        for e in c["env"].as_array().unwrap() {
            let n = e["name"].as_str().unwrap();
            if n.starts_with("DP__") {
                assert_env_names_real_key(n, &keys, &whence(name));
            }
            if let Some(v) = e["value"].as_str() {
                env.insert(n.to_owned(), v.replace("$(POD_IP)", POD_IP));
            }
            if n.starts_with("AWS_") {
                assert!(
                    e["valueFrom"]["secretKeyRef"]["name"].is_string(),
                    "{}",
                    whence(&format!("{name}: {n} must come from a Secret"))
                );
            }
        }
        let has_aws = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "AWS_SECRET_ACCESS_KEY");
        assert_eq!(
            has_aws,
            s3,
            "{}",
            whence(&format!("{name}: S3 credentials"))
        );

        let cfg = load(&config_file, &env, &whence(name));
        let ports = cfg.server.ports(kind);
        let want = default_ports(kind);
        assert_eq!(
            (ports.grpc_port, ports.http_port),
            (want.grpc_port, want.http_port),
            "{}",
            whence(&format!("{name}: default ports"))
        );
        let container_port = |pname: &str| {
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == pname)
                .and_then(|p| p["containerPort"].as_u64())
        };
        assert_eq!(container_port("grpc"), Some(ports.grpc_port.into()));
        assert_eq!(container_port("http"), Some(ports.http_port.into()));
        assert_eq!(
            c["livenessProbe"]["grpc"]["port"].as_u64(),
            Some(ports.grpc_port.into()),
            "{}",
            whence(&format!("{name}: liveness probe"))
        );
        let service_name = {
            let mut n = kind.name().to_owned();
            n[..1].make_ascii_uppercase();
            format!("dataprocessor.v1.{n}")
        };
        assert_eq!(
            c["readinessProbe"]["grpc"],
            serde_json::json!({"port": ports.grpc_port, "service": service_name}),
            "{}",
            whence(&format!("{name}: readiness probe"))
        );
        let mounted_at = |volume: &str| -> Option<String> {
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == volume)
                .map(|m| m["mountPath"].as_str().unwrap().to_owned())
        };
        // Shared storage: the file:// URL is where the ReadWriteMany claim is mounted.
        assert_eq!(
            cfg.storage.url.strip_prefix("file://").map(str::to_owned),
            mounted_at("storage"),
            "{}",
            whence(&format!("{name}: storage.url and the storage volume"))
        );
        if kind == ServiceKind::Scheduler {
            // The catalog lives on the StatefulSet's own claim.
            assert_eq!(
                mounted_at("catalog").as_deref(),
                Some(cfg.catalog.path.as_str()),
                "{}",
                whence("the catalog volume is mounted at catalog.path")
            );
            assert_eq!(
                w["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
                "catalog"
            );
        } else {
            assert_eq!(
                ports.advertised_address,
                format!("{POD_IP}:{}", ports.grpc_port),
                "{}",
                whence(&format!("{name}: a worker advertises its pod IP"))
            );
            // The scheduler endpoint is the scheduler's Service.
            let svc = of_kind("Service")
                .into_iter()
                .find(|s| {
                    cfg.scheduler.endpoint
                        == format!(
                            "http://{}:{}",
                            s["metadata"]["name"].as_str().unwrap(),
                            default_ports(ServiceKind::Scheduler).grpc_port
                        )
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{}",
                        whence(&format!(
                            "{name}: scheduler.endpoint {} is no Service",
                            cfg.scheduler.endpoint
                        ))
                    )
                });
            assert_eq!(
                svc["spec"]["selector"]["app.kubernetes.io/component"],
                "scheduler"
            );
        }
        assert_eq!(cfg.storage.url.starts_with("s3://"), s3, "{}", whence(name));
    }

    // Every Service port is a default port of its component.
    for s in of_kind("Service") {
        let component = s["spec"]["selector"]["app.kubernetes.io/component"]
            .as_str()
            .unwrap();
        let want = default_ports(kind_named(component));
        for p in s["spec"]["ports"].as_array().unwrap() {
            let port = p["port"].as_u64().unwrap();
            let expected = match p["name"].as_str().unwrap() {
                "grpc" => want.grpc_port,
                "http" => want.http_port,
                other => panic!("unexpected Service port {other}"),
            };
            assert_eq!(
                port,
                u64::from(expected),
                "{}",
                whence(s["metadata"]["name"].as_str().unwrap())
            );
        }
    }
}

#[test]
fn helm_chart_renders_pods_whose_config_loads() {
    check_rendered_chart("ci/default-values.yaml", false);
    check_rendered_chart("ci/s3-hpa-monitoring-values.yaml", true);
}

#[test]
fn helm_templates_name_real_config_keys() {
    let keys = config_keys();
    let dir = root().join("helm/data-processor/templates");
    let mut found = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for name in dp_env_names(&text) {
            found += 1;
            // Names built inside the template could not be checked: keep them literal.
            assert!(
                !name.ends_with("__") && env_to_key(&name).is_some_and(|k| !k.contains("..")),
                "{}: write DP__ variable names out in full ({name})",
                path.display()
            );
            assert_env_names_real_key(&name, &keys, &path.display().to_string());
        }
    }
    assert!(
        found >= 3,
        "expected the workers' advertised-address variables"
    );
}

#[test]
fn dockerfile_ships_every_workspace_binary() {
    let dockerfile = read("deploy/Dockerfile");
    let listed: BTreeSet<String> = dockerfile
        .lines()
        .find_map(|l| l.trim().strip_prefix("ARG BINARIES="))
        .expect("deploy/Dockerfile: no `ARG BINARIES=` line")
        .trim_matches('"')
        .split_whitespace()
        .map(str::to_owned)
        .collect();

    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(root().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut bins = BTreeSet::new();
    for pkg in meta["packages"].as_array().unwrap() {
        // The benchmark harness is a developer tool, not part of the image.
        if pkg["name"] == "bench" {
            continue;
        }
        for t in pkg["targets"].as_array().unwrap() {
            if str_list(&t["kind"]).iter().any(|k| k == "bin") {
                bins.insert(t["name"].as_str().unwrap().to_owned());
            }
        }
    }
    // storage-admin is listed ahead of its crate (see PENDING_BINARY); every other name
    // must be a workspace binary and every workspace binary must be listed.
    let mut expected = bins.clone();
    expected.insert(PENDING_BINARY.to_owned());
    assert_eq!(
        listed, expected,
        "deploy/Dockerfile BINARIES vs the workspace's binaries (cargo metadata)"
    );
    if !bins.contains(PENDING_BINARY) {
        eprintln!("note: {PENDING_BINARY} is not in the workspace yet; the image skips it");
    }

    // The image's other promises.
    let exposed: BTreeSet<u16> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(|l| l.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    let defaults: BTreeSet<u16> = ServiceKind::ALL
        .iter()
        .flat_map(|k| {
            let p = default_ports(*k);
            [p.grpc_port, p.http_port]
        })
        .collect();
    assert_eq!(exposed, defaults, "deploy/Dockerfile EXPOSE");
    assert!(
        dockerfile.contains("\nUSER 10001:10001\n"),
        "runs as non-root"
    );
    assert!(dockerfile.contains("\nHEALTHCHECK "), "has a HEALTHCHECK");
    assert!(
        dockerfile.contains("make release"),
        "builds with `make release`"
    );
    let makefile = read("Makefile");
    assert!(
        makefile.contains("\nrelease: deps\n\t$(CARGO) build --release --workspace --bins\n"),
        "Makefile `release` is the command the Dockerfile relies on"
    );
    let default_config = dockerfile
        .lines()
        .find_map(|l| {
            l.strip_prefix("COPY ")
                .and_then(|r| r.strip_suffix(" /etc/data-processor/config.yaml"))
        })
        .expect("the image's default config");
    load(
        &root().join(default_config),
        &BTreeMap::new(),
        "the image's default config",
    );
}

#[test]
fn grafana_dashboard_uses_our_metric_names() {
    use runtime::metrics::*;
    let dash: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/data-processor.json")).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    let known = [
        TASKS_TOTAL,
        QUEUE_DEPTH,
        MEMORY_USAGE,
        CPU_USAGE,
        WAL_REPLAY_RATE,
        MEMTABLE_FLUSH_RATE,
        COMPACTION_RATE,
        TASK_DURATION,
        // The scheduler's own series (crates/scheduler/src/service.rs).
        "processor_stall_forecast_seconds",
        "processor_compaction_debt_bytes",
        "processor_lease_expiries_total",
        "processor_stale_commits_refused_total",
        "processor_quarantined_files",
        "processor_ingest_bytes_per_sec",
    ];
    for name in &known[..7] {
        assert!(
            exprs.iter().any(|e| e.contains(name)),
            "the dashboard shows no {name}"
        );
    }
    // Every metric-looking identifier in a query is one the services export.
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("processor_") || word.ends_with("_rate") {
                let base = word
                    .trim_end_matches("_bucket")
                    .trim_end_matches("_sum")
                    .trim_end_matches("_count");
                assert!(
                    known.contains(&base),
                    "dashboard query uses unknown metric {word}: {e}"
                );
            }
        }
    }
    // The alert rules name only exported series too.
    let alerts = read("deploy/prometheus/alerts.yml");
    for line in alerts
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("processor_") {
                assert!(
                    known.contains(&word),
                    "alert rule uses unknown metric {word}: {line}"
                );
            }
        }
    }
    // Its datasource is the provisioned one.
    let ds = yaml_value(
        &read("deploy/grafana/provisioning/datasources/prometheus.yml"),
        "datasource",
    );
    let uid = ds["datasources"][0]["uid"].as_str().unwrap();
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["uid"], uid, "panel {}", p["title"]);
    }
}
