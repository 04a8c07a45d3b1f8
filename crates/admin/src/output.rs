//! Rendering of replies: a readable text form and a JSON form with stable field names
//! (enums as their lowercase names, keys as UTF-8 where they are, hex otherwise).

use proto::v1 as pb;
use serde_json::{Value, json};

pub fn render(text: String, value: Value, as_json: bool) -> String {
    if as_json {
        serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
    } else {
        text
    }
}

fn key(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

fn lower(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

pub fn worker_kind(k: i32) -> String {
    pb::WorkerKind::try_from(k).map_or("unknown".into(), |k| lower(k.as_str_name(), "WORKER_KIND_"))
}

pub fn task_type(t: i32) -> String {
    pb::TaskType::try_from(t).map_or("unknown".into(), |t| lower(t.as_str_name(), "TASK_TYPE_"))
}

pub fn task_state(s: i32) -> String {
    pb::TaskState::try_from(s).map_or("unknown".into(), |s| lower(s.as_str_name(), "TASK_STATE_"))
}

pub fn parse_state(s: &str) -> Option<pb::TaskState> {
    pb::TaskState::from_str_name(&format!("TASK_STATE_{}", s.to_ascii_uppercase()))
        .filter(|s| *s != pb::TaskState::Unspecified)
}

/// `1.5 MiB`-style sizes (binary units).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn message(m: &str, as_json: bool) -> String {
    render(m.to_owned(), json!({ "message": m }), as_json)
}

/// `status`: the scheduler, each worker (`probes[i]` is worker i's own GetStatus, or why it
/// could not be asked), the stall forecast of each table.
pub fn status(
    s: &pb::GetStatusResponse,
    probes: &[Result<pb::ServiceInfo, String>],
    forecasts: &[pb::StallForecast],
    as_json: bool,
) -> String {
    let sched = s.scheduler.clone().unwrap_or_default();
    let mut text = format!(
        "scheduler {}  version {}  up {}s  tables {}  running {}  pending {}\nworkers:",
        sched.advertised_address,
        sched.version,
        sched.uptime_seconds,
        s.tables,
        s.running_tasks,
        s.pending_tasks
    );
    if s.workers.is_empty() {
        text.push_str(" none");
    }
    let workers: Vec<Value> = s
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            text.push_str(&format!(
                "\n  {:<10} {:<22} id {:<4} slots {:<3} running {:<3} {} (heartbeat {} ms ago)  version {}",
                worker_kind(w.kind),
                w.address,
                w.worker_id,
                w.slots,
                w.running,
                if w.alive { "alive" } else { "DEAD" },
                w.last_heartbeat_ms_ago,
                w.version,
            ));
            let mut v = json!({
                "id": w.worker_id, "kind": worker_kind(w.kind), "address": w.address,
                "slots": w.slots, "running": w.running, "alive": w.alive,
                "last_heartbeat_ms_ago": w.last_heartbeat_ms_ago, "version": w.version,
            });
            match probes.get(i) {
                Some(Ok(info)) => {
                    text.push_str(&format!(
                        "  up {}s  memory {}",
                        info.uptime_seconds,
                        human_bytes(info.memory_bytes)
                    ));
                    v["reachable"] = json!(true);
                    v["uptime_seconds"] = json!(info.uptime_seconds);
                    v["memory_bytes"] = json!(info.memory_bytes);
                }
                Some(Err(e)) => {
                    text.push_str(&format!("  GetStatus failed: {e}"));
                    v["reachable"] = json!(false);
                    v["error"] = json!(e);
                }
                None => {}
            }
            v
        })
        .collect();
    text.push_str("\ntables:");
    if forecasts.is_empty() {
        text.push_str(" none");
    }
    let forecast: Vec<Value> = forecasts
        .iter()
        .map(|f| {
            let stall = if f.seconds_to_stall < 0.0 {
                "no stall ahead".to_owned()
            } else {
                format!("stall in {:.0} s", f.seconds_to_stall)
            };
            text.push_str(&format!(
                "\n  {:<20} L0 {}/{} files ({:+.2}/s), {stall}; compaction debt {} B, draining {:.0} B/s",
                f.table, f.l0_files, f.l0_stop_threshold, f.l0_growth_files_per_sec, f.debt_bytes, f.drain_bytes_per_sec
            ));
            json!({
                "table": f.table, "l0_files": f.l0_files, "l0_stop_threshold": f.l0_stop_threshold,
                "l0_growth_files_per_sec": f.l0_growth_files_per_sec, "seconds_to_stall": f.seconds_to_stall,
                "debt_bytes": f.debt_bytes, "drain_bytes_per_sec": f.drain_bytes_per_sec,
            })
        })
        .collect();
    let value = json!({
        "scheduler": {
            "address": sched.advertised_address, "version": sched.version, "uptime_seconds": sched.uptime_seconds,
            "memory_bytes": sched.memory_bytes,
        },
        "tables": s.tables, "running_tasks": s.running_tasks, "pending_tasks": s.pending_tasks,
        "workers": workers, "forecast": forecast,
    });
    render(text, value, as_json)
}

pub fn queue(
    q: &pb::GetQueueStatusResponse,
    quarantined: &[pb::QuarantinedFile],
    as_json: bool,
) -> String {
    let mut text = format!(
        "queue depth {} of {}\n{:<18} {:>8} {:>8} {:>8} {:>6}",
        q.depth, q.capacity, "type", "pending", "running", "failed", "limit"
    );
    let types: Vec<Value> = q
        .types
        .iter()
        .map(|t| {
            text.push_str(&format!("\n{:<18} {:>8} {:>8} {:>8} {:>6}", task_type(t.r#type), t.pending, t.running, t.failed, t.limit));
            json!({ "type": task_type(t.r#type), "pending": t.pending, "running": t.running, "failed": t.failed, "limit": t.limit })
        })
        .collect();
    let waiting: Vec<Value> = q
        .waiting
        .iter()
        .map(|t| {
            text.push_str(&format!("\nwaiting: task {} {} {}: {}", t.task_id, task_type(t.r#type), t.table, t.waiting_reason));
            json!({ "id": t.task_id, "type": task_type(t.r#type), "table": t.table, "reason": t.waiting_reason })
        })
        .collect();
    text.push_str(&format!(
        "\ningest {:.0} B/s; deferrable work: {}",
        q.ingest_bytes_per_sec,
        if q.deferral.is_empty() {
            "may run"
        } else {
            q.deferral.as_str()
        }
    ));
    let quarantined: Vec<Value> = quarantined
        .iter()
        .map(|f| {
            let error = f
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            let kind = if f.kind.is_empty() {
                "sst"
            } else {
                f.kind.as_str()
            };
            let state = if f.repairing {
                ", released: repair queued"
            } else {
                ""
            };
            text.push_str(&format!(
                "\nquarantined: table {} {kind} {} ({}{state}): {}",
                f.table, f.file_id, f.path, error
            ));
            json!({ "table": f.table, "file_id": f.file_id, "path": f.path, "error": error,
                    "since_ms": f.since_unix_ms, "kind": kind, "first_seq": f.first_seq,
                    "repairing": f.repairing })
        })
        .collect();
    render(
        text,
        json!({ "depth": q.depth, "capacity": q.capacity, "types": types, "waiting": waiting,
                "ingest_bytes_per_sec": q.ingest_bytes_per_sec, "deferral": q.deferral,
                "quarantined": quarantined }),
        as_json,
    )
}

pub fn tables(ts: &[pb::TableInfo], as_json: bool) -> String {
    let mut text = format!(
        "{:<24} {:>12} {:>8}  replayer",
        "table", "checkpoint", "version"
    );
    let rows: Vec<Value> = ts
        .iter()
        .map(|t| {
            text.push_str(&format!("\n{:<24} {:>12} {:>8}  {}", t.name, t.checkpoint, t.manifest_version, t.replayer_address));
            json!({ "name": t.name, "checkpoint": t.checkpoint, "manifest_version": t.manifest_version, "replayer": t.replayer_address })
        })
        .collect();
    render(text, Value::Array(rows), as_json)
}

pub fn manifest(m: &pb::Manifest, as_json: bool) -> String {
    let mut text = format!(
        "table {}  version {}  checkpoint {}",
        m.table, m.version, m.checkpoint
    );
    let levels: Vec<Value> = m
        .levels
        .iter()
        .map(|l| {
            let bytes: u64 = l.files.iter().map(|f| f.size_bytes).sum();
            text.push_str(&format!("\nL{}: {} files, {} bytes", l.level, l.files.len(), bytes));
            let files: Vec<Value> = l
                .files
                .iter()
                .map(|f| {
                    let locked = m.locked_file_ids.contains(&f.file_id);
                    text.push_str(&format!(
                        "\n  {:>8} {:>12} B  [{} .. {}]  seq {}..{}{}",
                        f.file_id, f.size_bytes, key(&f.smallest_key), key(&f.largest_key), f.smallest_seq, f.largest_seq,
                        if locked { "  (compacting)" } else { "" }
                    ));
                    json!({
                        "id": f.file_id, "size": f.size_bytes, "smallest": key(&f.smallest_key), "largest": key(&f.largest_key),
                        "smallest_seq": f.smallest_seq, "largest_seq": f.largest_seq, "entries": f.entry_count,
                        "tombstones": f.tombstone_count, "locked": locked,
                    })
                })
                .collect();
            json!({ "level": l.level, "bytes": bytes, "files": files })
        })
        .collect();
    render(
        text,
        json!({ "table": m.table, "version": m.version, "checkpoint": m.checkpoint, "levels": levels }),
        as_json,
    )
}

/// `levels`: one row per level of the manifest (files, bytes, entries, tombstones, the
/// level's key range, files locked by running compactions), and the table's L0 stall
/// figures when the forecast has them.
pub fn levels(m: &pb::Manifest, forecast: Option<&pb::StallForecast>, as_json: bool) -> String {
    let mut text = format!(
        "table {}  version {}  checkpoint {}\n{:<5} {:>6} {:>14} {:>10} {:>10} {:>6}  key range",
        m.table,
        m.version,
        m.checkpoint,
        "level",
        "files",
        "bytes",
        "entries",
        "tombstones",
        "locked"
    );
    let rows: Vec<Value> = m
        .levels
        .iter()
        .map(|l| {
            let bytes: u64 = l.files.iter().map(|f| f.size_bytes).sum();
            let entries: u64 = l.files.iter().map(|f| f.entry_count).sum();
            let tombstones: u64 = l.files.iter().map(|f| f.tombstone_count).sum();
            let locked = l
                .files
                .iter()
                .filter(|f| m.locked_file_ids.contains(&f.file_id))
                .count();
            let smallest = l.files.iter().map(|f| f.smallest_key.as_slice()).min();
            let largest = l.files.iter().map(|f| f.largest_key.as_slice()).max();
            let range = match (smallest, largest) {
                (Some(lo), Some(hi)) => format!("[{} .. {}]", key(lo), key(hi)),
                _ => "-".to_owned(),
            };
            text.push_str(&format!(
                "\nL{:<4} {:>6} {:>14} {:>10} {:>10} {:>6}  {range}",
                l.level,
                l.files.len(),
                bytes,
                entries,
                tombstones,
                locked
            ));
            json!({
                "level": l.level, "files": l.files.len(), "bytes": bytes, "entries": entries,
                "tombstones": tombstones, "locked_files": locked,
                "smallest": smallest.map(key), "largest": largest.map(key),
            })
        })
        .collect();
    let total: u64 = m
        .levels
        .iter()
        .flat_map(|l| &l.files)
        .map(|f| f.size_bytes)
        .sum();
    text.push_str(&format!("\ntotal {total} bytes"));
    let mut value = json!({
        "table": m.table, "version": m.version, "checkpoint": m.checkpoint,
        "levels": rows, "total_bytes": total,
    });
    if let Some(f) = forecast {
        let stall = if f.seconds_to_stall < 0.0 {
            "no stall ahead".to_owned()
        } else {
            format!("stall in {:.0} s", f.seconds_to_stall)
        };
        text.push_str(&format!(
            "\nL0 {}/{} files before writes stop ({stall}); compaction debt {} bytes",
            f.l0_files, f.l0_stop_threshold, f.debt_bytes
        ));
        value["l0_stop_threshold"] = json!(f.l0_stop_threshold);
        value["seconds_to_stall"] = json!(f.seconds_to_stall);
        value["debt_bytes"] = json!(f.debt_bytes);
    }
    render(text, value, as_json)
}

/// One line of `compact`'s final report per task (its state, inputs, output level and time),
/// then its error history.
pub fn compaction_summary(t: &pb::Task) -> String {
    let mut text = format!(
        "task {}  {}  table {}  attempt {}",
        t.task_id,
        task_state(t.state),
        t.table,
        t.attempt
    );
    if let Some(pb::task_spec::Spec::Compaction(c)) = t.spec.as_ref().and_then(|s| s.spec.as_ref())
    {
        let inputs: Vec<String> = c
            .inputs
            .iter()
            .map(|l| format!("L{} {} file(s)", l.level, l.files.len()))
            .collect();
        text.push_str(&format!(
            "  {} ({}) -> L{}",
            inputs.join(" + "),
            human_bytes(crate::compact::input_bytes(t)),
            c.output_level
        ));
    }
    if let Some(a) = t.attempts.iter().rfind(|a| a.attempt == t.attempt)
        && a.ended_at_unix_ms >= a.started_at_unix_ms
        && a.ended_at_unix_ms > 0
    {
        let ms = a.ended_at_unix_ms - a.started_at_unix_ms;
        let took = if ms < 1000 {
            format!("{ms} ms")
        } else {
            format!("{:.1} s", ms as f64 / 1000.0)
        };
        text.push_str(&format!("  in {took} on {}", a.worker_address));
    }
    for e in &t.errors {
        text.push_str(&format!("\n  error (attempt {}): {}", e.attempt, e.message));
    }
    text
}

/// A task as JSON. A compaction also carries `compaction`: its input files per level, their
/// bytes, and the output level.
pub fn task_value(t: &pb::Task) -> Value {
    let mut v = json!({
        "id": t.task_id, "type": task_type(t.r#type), "state": task_state(t.state), "table": t.table,
        "attempt": t.attempt, "waiting_reason": t.waiting_reason, "priority": t.priority,
        "attempts": t.attempts.iter().map(|a| json!({
            "attempt": a.attempt, "worker_id": a.worker_id, "worker": a.worker_address,
            "started_at_ms": a.started_at_unix_ms, "ended_at_ms": a.ended_at_unix_ms,
        })).collect::<Vec<_>>(),
        "errors": t.errors.iter().map(|e| json!({
            "attempt": e.attempt, "message": e.message, "file": e.file, "offset": e.offset, "retriable": e.retriable,
        })).collect::<Vec<_>>(),
    });
    if let Some(pb::task_spec::Spec::Compaction(c)) = t.spec.as_ref().and_then(|s| s.spec.as_ref())
    {
        v["compaction"] = json!({
            "inputs": c.inputs.iter().map(|l| json!({
                "level": l.level, "files": l.files.iter().map(|f| f.file_id).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "input_bytes": crate::compact::input_bytes(t),
            "output_level": c.output_level,
            "reason": c.reason,
        });
    }
    v
}

pub fn tasks(ts: &[pb::Task], as_json: bool) -> String {
    let mut text = format!(
        "{:>8} {:<18} {:<10} {:<16} {:>7}",
        "id", "type", "state", "table", "attempt"
    );
    for t in ts {
        text.push_str(&format!(
            "\n{:>8} {:<18} {:<10} {:<16} {:>7}",
            t.task_id,
            task_type(t.r#type),
            task_state(t.state),
            t.table,
            t.attempt
        ));
    }
    render(
        text,
        Value::Array(ts.iter().map(task_value).collect()),
        as_json,
    )
}

pub fn task(t: &pb::Task, as_json: bool) -> String {
    let mut text = format!(
        "task {}  {}  {}  table {}  attempt {}",
        t.task_id,
        task_type(t.r#type),
        task_state(t.state),
        t.table,
        t.attempt
    );
    if !t.waiting_reason.is_empty() {
        text.push_str(&format!("\nwaiting: {}", t.waiting_reason));
    }
    for a in &t.attempts {
        text.push_str(&format!(
            "\nattempt {} on worker {} ({})",
            a.attempt, a.worker_id, a.worker_address
        ));
    }
    for e in &t.errors {
        text.push_str(&format!("\nerror (attempt {}): {}", e.attempt, e.message));
    }
    render(text, task_value(t), as_json)
}

pub fn trigger(r: &pb::TriggerResponse, as_json: bool) -> String {
    let ids: Vec<String> = r.task_ids.iter().map(u64::to_string).collect();
    let text = if ids.is_empty() {
        r.message.clone()
    } else {
        format!("{} (tasks {})", r.message, ids.join(", "))
    };
    render(
        text,
        json!({ "message": r.message, "task_ids": r.task_ids }),
        as_json,
    )
}

pub fn plan(p: &pb::PlanCompactionResponse, as_json: bool) -> String {
    let mut text = format!(
        "{} compaction(s), estimated write amplification {:.2}",
        p.compactions.len(),
        p.estimated_write_amplification
    );
    let plans: Vec<Value> = p
        .compactions
        .iter()
        .map(|c| {
            let spec = c.spec.clone().unwrap_or_default();
            let inputs: Vec<Value> = spec
                .inputs
                .iter()
                .map(|l| json!({ "level": l.level, "files": l.files.iter().map(|f| f.file_id).collect::<Vec<_>>() }))
                .collect();
            let listed: Vec<String> = spec
                .inputs
                .iter()
                .map(|l| format!("L{}: {:?}", l.level, l.files.iter().map(|f| f.file_id).collect::<Vec<_>>()))
                .collect();
            text.push_str(&format!(
                "\n- {} -> L{}{}{}  [{}]  read {} B, write {} B",
                spec.reason,
                spec.output_level,
                if spec.bottommost { " (bottommost)" } else { "" },
                if spec.trivial_move { " (trivial move)" } else { "" },
                listed.join("; "),
                c.estimated_bytes_read,
                c.estimated_bytes_written
            ));
            json!({
                "reason": spec.reason, "inputs": inputs, "output_level": spec.output_level,
                "bottommost": spec.bottommost, "trivial_move": spec.trivial_move,
                "estimated_bytes_read": c.estimated_bytes_read, "estimated_bytes_written": c.estimated_bytes_written,
            })
        })
        .collect();
    for s in &p.skipped {
        text.push_str(&format!("\nskipped: {s}"));
    }
    render(
        text,
        json!({ "compactions": plans, "estimated_write_amplification": p.estimated_write_amplification, "skipped": p.skipped }),
        as_json,
    )
}

/// The key series of a Prometheus text page: ours (processor_*, wal_*, memtable_*,
/// compaction_*), without HELP/TYPE lines or histogram buckets.
pub fn metrics(service: &str, body: &str, as_json: bool) -> String {
    let ours = |name: &str| {
        ["processor_", "wal_", "memtable_", "compaction_"]
            .iter()
            .any(|p| name.starts_with(p))
            && !name.contains("_bucket")
    };
    let mut text = format!("{service} metrics:");
    let mut map = serde_json::Map::new();
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !ours(series) {
            continue;
        }
        text.push_str(&format!("\n  {series:<90} {value}"));
        let v = value
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(value));
        map.insert(series.to_owned(), v);
    }
    render(text, json!({ "service": service, "metrics": map }), as_json)
}

/// A key or value for output: hex (no prefix) with `--hex`, else as [`key`] renders it.
pub fn bytes_text(b: &[u8], hex: bool) -> String {
    if hex {
        b.iter().map(|x| format!("{x:02x}")).collect()
    } else {
        key(b)
    }
}

/// An acknowledged `put` or `delete`.
pub fn written(op: &str, table: &str, k: &[u8], seq: u64, as_json: bool) -> String {
    render(
        format!("{op} {} in table {table}: seq {seq}", key(k)),
        json!({ "op": op, "table": table, "key": key(k), "seq": seq }),
        as_json,
    )
}

/// `get`: the value alone, or `{"key","value","seq"}`.
pub fn value(v: &admin::Version, hex: bool, as_json: bool) -> String {
    let value = v.value.as_deref().unwrap_or_default();
    render(
        bytes_text(value, hex),
        json!({ "key": bytes_text(&v.key, hex), "value": bytes_text(value, hex), "seq": v.seq }),
        as_json,
    )
}

/// `scan`: `key<TAB>value` lines, or an array of `{"key","value","seq"}`.
pub fn scan(vs: &[admin::Version], hex: bool, as_json: bool) -> String {
    let text: Vec<String> = vs
        .iter()
        .map(|v| {
            format!(
                "{}\t{}",
                bytes_text(&v.key, hex),
                bytes_text(v.value.as_deref().unwrap_or_default(), hex)
            )
        })
        .collect();
    let rows: Vec<Value> = vs
        .iter()
        .map(|v| {
            json!({
                "key": bytes_text(&v.key, hex),
                "value": bytes_text(v.value.as_deref().unwrap_or_default(), hex),
                "seq": v.seq,
            })
        })
        .collect();
    render(text.join("\n"), Value::Array(rows), as_json)
}

/// `load`'s summary (built by the load module as JSON).
pub fn load(s: &Value, as_json: bool) -> String {
    let f = |k: &str| s[k].as_f64().unwrap_or_default();
    let u = |k: &str| s[k].as_u64().unwrap_or_default();
    let tables: Vec<String> = s["tables"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    format!(
                        "{} ({} writes, last seq {})",
                        t["name"].as_str().unwrap_or_default(),
                        t["writes"].as_u64().unwrap_or_default(),
                        t["last_seq"].as_u64().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut text = format!(
        "{} writes ({} puts, {} deletes) in {} batches, {} bytes in {:.2} s: {:.0} writes/s, {:.2} MB/s; append latency p50 {:.2} ms, p99 {:.2} ms\ntables: {}",
        u("writes"),
        u("puts"),
        u("deletes"),
        u("batches"),
        u("bytes"),
        f("seconds"),
        f("writes_per_sec"),
        f("mb_per_sec"),
        s["latency_ms"]["p50"].as_f64().unwrap_or_default(),
        s["latency_ms"]["p99"].as_f64().unwrap_or_default(),
        tables.join(", ")
    );
    if let Some(o) = s["oracle"].as_str() {
        text.push_str(&format!("\noracle: {o}"));
    }
    render(text, s.clone(), as_json)
}

/// Table statistics.
pub fn stats(s: &pb::TableStatistics, as_json: bool) -> String {
    let mut text = format!(
        "table {}  entries {}  tombstones {}  live keys ~{}\nkey range [{} .. {}]\nwrite amplification {:.2}  space amplification {:.2}",
        s.table,
        s.entries,
        s.tombstones,
        s.estimated_live_keys,
        key(&s.smallest_key),
        key(&s.largest_key),
        s.write_amplification,
        s.space_amplification,
    );
    for l in &s.levels {
        text.push_str(&format!(
            "\nL{}: {} files, {} bytes",
            l.level, l.files, l.bytes
        ));
    }
    for c in &s.columns {
        text.push_str(&format!(
            "\ncolumn {}: nulls {}  min {}  max {}  distinct ~{}",
            c.name, c.null_count, c.min, c.max, c.distinct_estimate
        ));
    }
    let value = json!({
        "table": s.table, "entries": s.entries, "tombstones": s.tombstones,
        "estimated_live_keys": s.estimated_live_keys,
        "smallest_key": key(&s.smallest_key), "largest_key": key(&s.largest_key),
        "write_amplification": s.write_amplification, "space_amplification": s.space_amplification,
        "levels": s.levels.iter().map(|l| json!({"level": l.level, "files": l.files, "bytes": l.bytes})).collect::<Vec<_>>(),
        "columns": s.columns.iter().map(|c| json!({
            "name": c.name, "null_count": c.null_count, "min": c.min, "max": c.max,
            "distinct_estimate": c.distinct_estimate,
        })).collect::<Vec<_>>(),
        "computed_at_ms": s.computed_at_unix_ms,
    });
    render(text, value, as_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_readable() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }

    fn file(id: u64, size: u64, lo: &str, hi: &str, entries: u64) -> pb::FileMeta {
        pb::FileMeta {
            file_id: id,
            size_bytes: size,
            smallest_key: lo.as_bytes().to_vec(),
            largest_key: hi.as_bytes().to_vec(),
            entry_count: entries,
            tombstone_count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn levels_sum_each_level_and_span_its_key_range() {
        let m = pb::Manifest {
            table: "t".into(),
            version: 7,
            checkpoint: 99,
            levels: vec![
                pb::Level {
                    level: 0,
                    files: vec![file(1, 100, "c", "x", 10), file(2, 50, "a", "m", 5)],
                },
                pb::Level {
                    level: 1,
                    files: vec![],
                },
            ],
            locked_file_ids: vec![2],
        };
        let forecast = pb::StallForecast {
            table: "t".into(),
            l0_files: 2,
            l0_stop_threshold: 36,
            seconds_to_stall: -1.0,
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&levels(&m, Some(&forecast), true)).expect("JSON");
        assert_eq!(
            v["levels"][0],
            json!({
                "level": 0, "files": 2, "bytes": 150, "entries": 15, "tombstones": 2,
                "locked_files": 1, "smallest": "a", "largest": "x",
            })
        );
        assert_eq!(v["levels"][1]["smallest"], Value::Null);
        assert_eq!(
            (v["total_bytes"].as_u64(), v["l0_stop_threshold"].as_u64()),
            (Some(150), Some(36))
        );
        let text = levels(&m, Some(&forecast), false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "table t  version 7  checkpoint 99");
        assert_eq!(
            lines[2],
            "L0         2            150         15          2      1  [a .. x]"
        );
        assert!(lines[3].ends_with("  -"), "{text}");
        assert_eq!(
            lines[5],
            "L0 2/36 files before writes stop (no stall ahead); compaction debt 0 bytes"
        );
    }
}
