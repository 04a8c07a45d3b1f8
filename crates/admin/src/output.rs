//! Rendering of replies: a readable text form and a JSON form with stable field names
//! (enums as their lowercase names, keys as UTF-8 where they are, hex otherwise).

use proto::v1 as pb;
use serde_json::{Value, json};

fn render(text: String, value: Value, as_json: bool) -> String {
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

pub fn message(m: &str, as_json: bool) -> String {
    render(m.to_owned(), json!({ "message": m }), as_json)
}

pub fn status(s: &pb::GetStatusResponse, forecasts: &[pb::StallForecast], as_json: bool) -> String {
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
        .map(|w| {
            text.push_str(&format!(
                "\n  {:<10} {:<22} id {:<4} slots {:<3} running {:<3} {} (heartbeat {} ms ago)",
                worker_kind(w.kind),
                w.address,
                w.worker_id,
                w.slots,
                w.running,
                if w.alive { "alive" } else { "DEAD" },
                w.last_heartbeat_ms_ago
            ));
            json!({
                "id": w.worker_id, "kind": worker_kind(w.kind), "address": w.address,
                "slots": w.slots, "running": w.running, "alive": w.alive,
                "last_heartbeat_ms_ago": w.last_heartbeat_ms_ago, "version": w.version,
            })
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
        "scheduler": { "address": sched.advertised_address, "version": sched.version, "uptime_seconds": sched.uptime_seconds },
        "tables": s.tables, "running_tasks": s.running_tasks, "pending_tasks": s.pending_tasks,
        "workers": workers, "forecast": forecast,
    });
    render(text, value, as_json)
}

pub fn queue(q: &pb::GetQueueStatusResponse, as_json: bool) -> String {
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
    render(
        text,
        json!({ "depth": q.depth, "capacity": q.capacity, "types": types, "waiting": waiting }),
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

fn task_value(t: &pb::Task) -> Value {
    json!({
        "id": t.task_id, "type": task_type(t.r#type), "state": task_state(t.state), "table": t.table,
        "attempt": t.attempt, "waiting_reason": t.waiting_reason, "priority": t.priority,
        "attempts": t.attempts.iter().map(|a| json!({
            "attempt": a.attempt, "worker_id": a.worker_id, "worker": a.worker_address,
            "started_at_ms": a.started_at_unix_ms, "ended_at_ms": a.ended_at_unix_ms,
        })).collect::<Vec<_>>(),
        "errors": t.errors.iter().map(|e| json!({
            "attempt": e.attempt, "message": e.message, "file": e.file, "offset": e.offset, "retriable": e.retriable,
        })).collect::<Vec<_>>(),
    })
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
