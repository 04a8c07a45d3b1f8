//! The data path as real processes: a scheduler, a replayer and flushers sharing one storage
//! directory, `storage-admin` to write and read, and the oracle check every crash test ends
//! with: each acknowledged write is readable with its newest value, deleted keys are absent.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{Ports, Proc, bin, service_env, wait_healthy, wait_until};

/// What `storage-admin` printed.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// One service process of a [`DataCluster`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    Scheduler,
    Replayer,
    /// Index into [`DataCluster::flushers`].
    Flusher(usize),
    /// Index into [`DataCluster::compactors`].
    Compactor(usize),
}

impl Slot {
    /// The service's name (`flusher`, ...).
    pub fn service(self) -> &'static str {
        match self {
            Slot::Scheduler => "scheduler",
            Slot::Replayer => "replayer",
            Slot::Flusher(_) => "flusher",
            Slot::Compactor(_) => "compactor",
        }
    }
}

/// A scheduler, one replayer and any number of flushers, each a process.
pub struct DataCluster {
    pub dir: PathBuf,
    pub sched_ports: Ports,
    pub sched: Option<Proc>,
    pub replayer_ports: Ports,
    pub replayer: Option<Proc>,
    pub flushers: Vec<Option<Proc>>,
    pub compactors: Vec<Option<Proc>>,
    /// Ports of every flusher and compactor started, in start order.
    pub worker_ports: Vec<Ports>,
    /// Extra environment of `storage-admin` runs (e.g. the AWS_* settings of an S3 store).
    pub admin_env: Vec<(String, String)>,
    env: Vec<(String, String)>,
    restarts: usize,
}

impl DataCluster {
    /// Starts the scheduler and a replayer (no flusher) in `dir`, with `extra` environment
    /// for every service. Defaults tuned for tests: fast heartbeats, 2 s leases, 256 KiB
    /// memtables, a 1 s age trigger.
    pub fn start(dir: &Path, extra: &[(&str, &str)]) -> Self {
        let sched_ports = Ports::free();
        let mut env: Vec<(String, String)> = [
            ("DP__SCHEDULER__HEARTBEAT_INTERVAL", "200ms"),
            ("DP__SCHEDULER__HEARTBEAT_TIMEOUT", "2s"),
            ("DP__SCHEDULER__RETRY_BACKOFF_BASE", "200ms"),
            ("DP__SCHEDULER__RETRY_BACKOFF_MAX", "1s"),
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "256KB"),
            ("DP__WAL_REPLAY__FLUSH_INTERVAL", "1s"),
            ("DP__TELEMETRY__LOG_LEVEL", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        env.push((
            "DP__SCHEDULER__ENDPOINT".into(),
            format!("http://{}", sched_ports.grpc_addr()),
        ));
        for (k, v) in extra {
            env.retain(|(ek, _)| ek != k);
            env.push((k.to_string(), v.to_string()));
        }
        let mut c = Self {
            dir: dir.to_owned(),
            sched_ports,
            sched: None,
            replayer_ports: Ports::free(),
            replayer: None,
            flushers: Vec::new(),
            compactors: Vec::new(),
            worker_ports: Vec::new(),
            admin_env: Vec::new(),
            env,
            restarts: 0,
        };
        c.start_scheduler();
        c.start_replayer();
        c
    }

    fn service(&mut self, binary: &str, ports: Ports) -> Proc {
        let p = self.spawn_service(binary, ports, &[]);
        wait_healthy(&p, ports.http);
        p
    }

    /// Starts `binary` on `ports` with the cluster's environment plus `extra`, without
    /// waiting for it to become healthy (a process armed with a crash point may die first).
    pub fn spawn_service(&mut self, binary: &str, ports: Ports, extra: &[(&str, &str)]) -> Proc {
        let mut env = service_env(binary, ports, &self.dir);
        let extra = extra.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        for (k, v) in self.env.clone().into_iter().chain(extra) {
            env.retain(|(ek, _)| *ek != k);
            env.push((k, v));
        }
        self.restarts += 1;
        let label = format!("{binary}-{}", self.restarts);
        Proc::start(binary, &label, &self.dir, &[], &env)
    }

    /// SIGKILLs the process in `slot` (if any) and starts `binary` there again with `extra`
    /// environment; waits until it is healthy or has exited (a crash point fired early).
    /// Workers get new ports (their old registration expires); the scheduler and the
    /// replayer keep theirs.
    pub fn restart(&mut self, slot: Slot, extra: &[(&str, &str)]) {
        let (binary, ports) = match slot {
            Slot::Scheduler => ("scheduler", self.sched_ports),
            Slot::Replayer => ("replayer", self.replayer_ports),
            Slot::Flusher(_) => ("flusher", Ports::free()),
            Slot::Compactor(_) => ("compactor", Ports::free()),
        };
        Self::kill(self.slot(slot));
        let mut p = self.spawn_service(binary, ports, extra);
        let ok = wait_until(Duration::from_secs(30), || {
            p.child.try_wait().ok().flatten().is_some()
                || matches!(crate::http_get(ports.http, "/health"), Ok((200, _)))
        });
        assert!(
            ok,
            "{} did not become healthy; log:\n{}",
            p.name,
            p.log_text()
        );
        if matches!(slot, Slot::Flusher(_) | Slot::Compactor(_)) {
            self.worker_ports.push(ports);
        }
        *self.slot(slot) = Some(p);
    }

    /// The process of `slot`.
    pub fn slot(&mut self, slot: Slot) -> &mut Option<Proc> {
        match slot {
            Slot::Scheduler => &mut self.sched,
            Slot::Replayer => &mut self.replayer,
            Slot::Flusher(i) => &mut self.flushers[i],
            Slot::Compactor(i) => &mut self.compactors[i],
        }
    }

    pub fn start_scheduler(&mut self) {
        let p = self.service("scheduler", self.sched_ports);
        self.sched = Some(p);
    }

    pub fn start_replayer(&mut self) {
        let p = self.service("replayer", self.replayer_ports);
        self.replayer = Some(p);
    }

    /// Starts a flusher with extra environment (e.g. a failpoint); returns its index.
    pub fn start_flusher_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let saved = self.env.clone();
        for (k, v) in extra {
            self.env.push((k.to_string(), v.to_string()));
        }
        let ports = Ports::free();
        self.worker_ports.push(ports);
        let p = self.service("flusher", ports);
        self.env = saved;
        self.flushers.push(Some(p));
        self.flushers.len() - 1
    }

    pub fn start_flusher(&mut self) -> usize {
        self.start_flusher_with(&[])
    }

    /// Starts a compactor with extra environment; returns its index.
    pub fn start_compactor_with(&mut self, extra: &[(&str, &str)]) -> usize {
        let saved = self.env.clone();
        for (k, v) in extra {
            self.env.push((k.to_string(), v.to_string()));
        }
        let ports = Ports::free();
        self.worker_ports.push(ports);
        let p = self.service("compactor", ports);
        self.env = saved;
        self.compactors.push(Some(p));
        self.compactors.len() - 1
    }

    pub fn start_compactor(&mut self) -> usize {
        self.start_compactor_with(&[])
    }

    /// SST file ids of `table` in storage.
    pub fn stored_ssts(&self, table: &str) -> std::collections::BTreeSet<u64> {
        let dir = self.dir.join("storage/tables").join(table).join("sst");
        std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()
                            .and_then(|n| n.strip_suffix(".sst"))
                            .and_then(|n| n.parse().ok())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// File ids of `table`'s manifest.
    pub fn manifest_ids(&self, table: &str) -> std::collections::BTreeSet<u64> {
        self.files(table)
            .iter()
            .filter_map(|f| f["id"].as_u64())
            .collect()
    }

    /// Files per level of `table`'s manifest.
    pub fn level_counts(&self, table: &str) -> Vec<usize> {
        let m = self.admin_json(&["manifest", "--table", table]);
        m["levels"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| l["files"].as_array().map_or(0, |f| f.len()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(p: &mut Option<Proc>) {
        if let Some(mut p) = p.take() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }

    pub fn admin_addr(&self) -> String {
        self.sched_ports.grpc_addr()
    }

    /// `storage-admin --scheduler <addr> args...`, with the cluster's admin environment.
    fn admin_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("storage-admin"));
        cmd.arg("--scheduler")
            .arg(self.admin_addr())
            .args(args)
            .env_remove("DP_SCHEDULER")
            .env_remove("DP__STORAGE__URL")
            .envs(self.admin_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Runs `storage-admin --scheduler <addr> args...`.
    pub fn admin(&self, args: &[&str]) -> Out {
        let out = self.admin_command(args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `storage-admin args...` in the background (a load running while the test
    /// kills or samples things); stdout discarded, stderr kept for the failure message.
    pub fn spawn_admin(&self, args: &[&str]) -> std::process::Child {
        self.admin_command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `storage-admin load` of `keys` seeded writes of 100-byte values into `table`, with
    /// the given overwrite and delete ratios, appending the acknowledged ones to `oracle`;
    /// it must succeed.
    pub fn load(
        &self,
        table: &str,
        keys: u64,
        seed: u64,
        (overwrite, delete): (f64, f64),
        oracle: &Path,
    ) {
        let o = self.admin(&[
            "load",
            table,
            "--keys",
            &keys.to_string(),
            "--value-size",
            "100",
            "--overwrite-ratio",
            &overwrite.to_string(),
            "--delete-ratio",
            &delete.to_string(),
            "--seed",
            &seed.to_string(),
            "--oracle",
            oracle.to_str().unwrap(),
        ]);
        assert_eq!(o.code, 0, "load: {}", o.stderr);
    }

    /// True when no task of the given types (`compaction`, `memtable_flush`, ...) is
    /// pending or running.
    pub fn idle(&self, types: &[&str]) -> bool {
        let o = self.admin(&["tasks", "list", "--json"]);
        o.code == 0
            && serde_json::from_str::<Value>(&o.stdout).is_ok_and(|v| {
                v.as_array().is_some_and(|ts| {
                    !ts.iter().any(|t| {
                        types.iter().any(|ty| t["type"] == *ty)
                            && (t["state"] == "pending" || t["state"] == "running")
                    })
                })
            })
    }

    /// `storage-admin ... --json`, which must succeed.
    pub fn admin_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.admin(&a);
        assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", o.stdout))
    }

    pub fn create_tables(&self, tables: &[&str]) {
        for t in tables {
            let o = self.admin(&["tables", "create", t]);
            assert_eq!(o.code, 0, "{}", o.stderr);
        }
    }

    /// `tables list` as (name → table JSON).
    pub fn tables(&self) -> BTreeMap<String, Value> {
        self.admin_json(&["tables", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_owned(), t.clone()))
            .collect()
    }

    pub fn checkpoint(&self, table: &str) -> u64 {
        self.tables()
            .get(table)
            .and_then(|t| t["checkpoint"].as_u64())
            .unwrap_or(0)
    }

    /// Waits until `table`'s flushed checkpoint reaches `seq`.
    pub fn wait_flushed(&self, table: &str, seq: u64, timeout: Duration) {
        let ok = wait_until(timeout, || {
            let o = self.admin(&["tables", "list", "--json"]);
            o.code == 0
                && serde_json::from_str::<Value>(&o.stdout).is_ok_and(|v| {
                    v.as_array().is_some_and(|ts| {
                        ts.iter().any(|t| {
                            t["name"] == table && t["checkpoint"].as_u64().unwrap_or(0) >= seq
                        })
                    })
                })
        });
        assert!(
            ok,
            "table {table} never flushed through seq {seq} (checkpoint {}); replayer log:\n{}",
            self.checkpoint(table),
            self.replayer
                .as_ref()
                .map(|p| tail(&p.log_text(), 40))
                .unwrap_or_default()
        );
    }

    /// The manifest's files as JSON objects.
    pub fn files(&self, table: &str) -> Vec<Value> {
        let m = self.admin_json(&["manifest", "--table", table]);
        m["levels"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .flat_map(|l| l["files"].as_array().cloned().unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything `scan` returns for `table`, as key → value.
    pub fn scan_all(&self, table: &str) -> BTreeMap<String, String> {
        let v = self.admin_json(&["scan", table, "--limit", "10000000"]);
        v.as_array()
            .unwrap_or_else(|| panic!("scan output is not an array: {v}"))
            .iter()
            .map(|e| {
                (
                    e["key"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Checks every acknowledged write of `oracle` against `scan` and a sample of `get`s:
    /// the newest value of each key is there, deleted keys are absent, nothing else exists.
    pub fn check_oracle(&self, oracle: &Path, tables: &[&str]) -> usize {
        let entries = admin::oracle::read_oracle(oracle).unwrap();
        assert!(!entries.is_empty(), "the oracle is empty");
        let mut checked = 0;
        for t in tables {
            let mut expected: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
            for e in entries.iter().filter(|e| e.table == *t) {
                let newer = expected.get(&e.key).is_none_or(|(s, _)| *s < e.seq);
                if newer {
                    expected.insert(e.key.clone(), (e.seq, e.value.clone()));
                }
            }
            let want: BTreeMap<String, String> = expected
                .iter()
                .filter_map(|(k, (_, v))| v.clone().map(|v| (k.clone(), v)))
                .collect();
            let got = self.scan_all(t);
            let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
            let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
            let wrong: Vec<&String> = want
                .iter()
                .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                .map(|(k, _)| k)
                .collect();
            assert!(
                missing.is_empty() && extra.is_empty() && wrong.is_empty(),
                "table {t}: {} acknowledged keys missing (e.g. {:?}), {} keys that should be absent (e.g. {:?}), {} with a stale value (e.g. {:?})",
                missing.len(),
                missing.iter().take(5).collect::<Vec<_>>(),
                extra.len(),
                extra.iter().take(5).collect::<Vec<_>>(),
                wrong.len(),
                wrong.iter().take(5).collect::<Vec<_>>(),
            );
            // Point reads agree, for a few live and a few deleted keys.
            for (k, (_, v)) in expected.iter().step_by((expected.len() / 8).max(1)) {
                let o = self.admin(&["get", t, k]);
                match v {
                    Some(v) => {
                        assert_eq!(o.code, 0, "get {t} {k}: {}", o.stderr);
                        assert_eq!(o.stdout.trim_end(), v, "get {t} {k}");
                    }
                    None => assert_eq!(o.code, 1, "get {t} {k} of a deleted key: {}", o.stdout),
                }
            }
            checked += expected.len();
        }
        checked
    }

    /// The largest acknowledged sequence number of `table` in the oracle.
    pub fn last_acked(oracle: &Path, table: &str) -> u64 {
        admin::oracle::read_oracle(oracle)
            .unwrap()
            .iter()
            .filter(|e| e.table == table)
            .map(|e| e.seq)
            .max()
            .unwrap_or(0)
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
