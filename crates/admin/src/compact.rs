//! `storage-admin compact`: queue a manual compaction (Admin.TriggerCompaction) and, unless
//! `--no-wait`, follow the tasks it created until each is final.
//!
//! Waiting polls GetTask for every unfinished task every [`POLL_EVERY`]. When stderr is a
//! terminal a progress line is redrawn there: tasks done, running and pending, and the
//! bytes read and written by the running attempts (their last heartbeat's progress) against
//! the bytes of the input files. The final task summaries go to stdout (text, or `--json`:
//! the TriggerCompaction reply's fields plus `tasks`).
//!
//! Outcome: exit 0 when every task succeeded (or there was nothing to compact); exit 1 when
//! any failed or was cancelled (its error history is in the summaries, one line on stderr
//! names it), or when `--timeout` passed first. The scheduler owns the tasks: a timeout (or
//! Ctrl-C) stops the waiting, not the compaction. A scheduler that is briefly unreachable
//! while we wait (restarting) is polled again until the timeout.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use proto::v1 as pb;
use serde_json::json;

use crate::{Cli, Failure, Reply, connect, output};

/// How often unfinished tasks are polled.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// What `compact` was asked for.
pub struct CompactArgs {
    pub table: String,
    pub level: Option<u32>,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub force: bool,
    pub wait: bool,
    pub timeout: Duration,
}

/// Whether a task is final (succeeded, failed or cancelled).
pub fn is_final(t: &pb::Task) -> bool {
    matches!(
        pb::TaskState::try_from(t.state),
        Ok(pb::TaskState::Succeeded | pb::TaskState::Failed | pb::TaskState::Cancelled)
    )
}

/// Bytes of a compaction task's input files (0 for other tasks).
pub fn input_bytes(t: &pb::Task) -> u64 {
    match t.spec.as_ref().and_then(|s| s.spec.as_ref()) {
        Some(pb::task_spec::Spec::Compaction(c)) => c
            .inputs
            .iter()
            .flat_map(|l| &l.files)
            .map(|f| f.size_bytes)
            .sum(),
        _ => 0,
    }
}

/// The last progress the current attempt reported: (bytes read, bytes written).
pub fn attempt_progress(t: &pb::Task) -> (u64, u64) {
    t.attempts
        .iter()
        .rfind(|a| a.attempt == t.attempt)
        .and_then(|a| a.progress.as_ref())
        .map_or((0, 0), |p| (p.bytes_read, p.bytes_written))
}

/// The progress line: tasks by state, bytes of the running attempts against their inputs
/// (or, while nothing runs, why a pending task waits), elapsed time. Pure (the elapsed time
/// is passed in).
pub fn progress_line(tasks: &[pb::Task], elapsed: Duration) -> String {
    let count = |s: pb::TaskState| tasks.iter().filter(|t| t.state == s as i32).count();
    let done = tasks.iter().filter(|t| is_final(t)).count();
    let running: Vec<&pb::Task> = tasks
        .iter()
        .filter(|t| t.state == pb::TaskState::Running as i32)
        .collect();
    let total: u64 = running.iter().map(|t| input_bytes(t)).sum();
    let (read, written) = running.iter().fold((0, 0), |(r, w), t| {
        let (tr, tw) = attempt_progress(t);
        (r + tr, w + tw)
    });
    let mut line = format!(
        "compaction: {done}/{} done, {} running, {} pending",
        tasks.len(),
        running.len(),
        count(pb::TaskState::Pending)
    );
    if !running.is_empty() {
        line.push_str(&format!(" | read {}", output::human_bytes(read)));
        if total > 0 {
            let pct = (read as f64 * 100.0 / total as f64).min(100.0);
            line.push_str(&format!(" of {} ({pct:.0}%)", output::human_bytes(total)));
        }
        line.push_str(&format!(", written {}", output::human_bytes(written)));
    } else if let Some(t) = tasks
        .iter()
        .find(|t| t.state == pb::TaskState::Pending as i32 && !t.waiting_reason.is_empty())
    {
        // Nothing runs: say why the first pending task waits (no live compactor, say).
        line.push_str(&format!(
            " | task {} waiting: {}",
            t.task_id, t.waiting_reason
        ));
    }
    line.push_str(&format!(" | {:.1} s", elapsed.as_secs_f64()));
    line
}

/// Why a finished wait is not a success, if it is not: the first failed or cancelled task,
/// with its last error.
pub fn failure_of(tasks: &[pb::Task]) -> Option<String> {
    let bad: Vec<&pb::Task> = tasks
        .iter()
        .filter(|t| {
            t.state == pb::TaskState::Failed as i32 || t.state == pb::TaskState::Cancelled as i32
        })
        .collect();
    let first = bad.first()?;
    let what = match first.errors.last() {
        Some(e) => format!(": {}", e.message),
        None => String::new(),
    };
    let more = if bad.len() > 1 {
        format!(" (and {} more)", bad.len() - 1)
    } else {
        String::new()
    };
    Some(format!(
        "compaction task {} of table {} {}{what}{more}",
        first.task_id,
        first.table,
        output::task_state(first.state)
    ))
}

/// Redraws the progress line on stderr (a terminal).
struct Bar {
    width: usize,
    drawn: bool,
}

impl Bar {
    fn draw(&mut self, line: &str) {
        self.width = self.width.max(line.len());
        eprint!("\r{line:<width$}", width = self.width);
        self.drawn = true;
    }

    fn clear(&self) {
        if self.drawn {
            eprint!("\r{:width$}\r", "", width = self.width);
        }
    }
}

/// Runs `storage-admin compact`.
pub async fn compact(cli: &Cli, args: CompactArgs) -> Result<Reply, Failure> {
    let mut admin = connect(&cli.scheduler).await?;
    let range = (!args.start.is_empty() || !args.end.is_empty()).then(|| pb::KeyRange {
        start: args.start.clone(),
        end: args.end.clone(),
    });
    let r = admin
        .trigger_compaction(pb::TriggerCompactionRequest {
            table: args.table.clone(),
            level: args.level,
            range,
            force: args.force,
        })
        .await?
        .into_inner();
    if !args.wait || r.task_ids.is_empty() {
        return Ok(Reply::ok(output::trigger(&r, cli.json)));
    }

    let started = Instant::now();
    let deadline = started + args.timeout;
    let mut bar = std::io::stderr().is_terminal().then_some(Bar {
        width: 0,
        drawn: false,
    });
    let mut tasks: BTreeMap<u64, pb::Task> = BTreeMap::new();
    let mut last_error: Option<String> = None;
    loop {
        for &id in &r.task_ids {
            if tasks.get(&id).is_some_and(is_final) {
                continue;
            }
            match admin.get_task(pb::GetTaskRequest { task_id: id }).await {
                Ok(t) => {
                    tasks.insert(id, t.into_inner());
                    last_error = None;
                }
                // The scheduler restarting: its tasks are durable, ask again.
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    last_error = Some(format!("scheduler unreachable: {}", s.message()));
                }
                Err(s) => {
                    if let Some(b) = &bar {
                        b.clear();
                    }
                    return Err(s.into());
                }
            }
        }
        let all: Vec<pb::Task> = tasks.values().cloned().collect();
        let finished = all.len() == r.task_ids.len() && all.iter().all(is_final);
        if let Some(b) = bar.as_mut() {
            b.draw(&progress_line(&all, started.elapsed()));
        }
        if finished {
            break;
        }
        if Instant::now() >= deadline {
            if let Some(b) = &bar {
                b.clear();
            }
            let unfinished: Vec<String> = r
                .task_ids
                .iter()
                .filter(|id| !tasks.get(id).is_some_and(is_final))
                .map(u64::to_string)
                .collect();
            let why = last_error.map(|e| format!(" ({e})")).unwrap_or_default();
            return Ok(Reply {
                stdout: summary(&r, &all, cli.json),
                failure: Some(Failure(
                    1,
                    format!(
                        "timed out after {:.0} s waiting for compaction task(s) {}{why}; not cancelled: follow with storage-admin tasks show {}",
                        args.timeout.as_secs_f64(),
                        unfinished.join(", "),
                        unfinished.first().map_or("", String::as_str),
                    ),
                )),
            });
        }
        tokio::time::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())))
            .await;
    }
    if let Some(b) = &bar {
        b.clear();
    }
    let all: Vec<pb::Task> = tasks.into_values().collect();
    Ok(Reply {
        stdout: summary(&r, &all, cli.json),
        failure: failure_of(&all).map(|m| Failure(1, m)),
    })
}

/// The final report: the trigger's message and each task's summary (with its errors).
fn summary(r: &pb::TriggerResponse, tasks: &[pb::Task], as_json: bool) -> String {
    if as_json {
        let v = json!({
            "message": r.message,
            "task_ids": r.task_ids,
            "tasks": tasks.iter().map(output::task_value).collect::<Vec<_>>(),
        });
        return serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string());
    }
    let mut text = r.message.clone();
    for t in tasks {
        text.push('\n');
        text.push_str(&output::compaction_summary(t));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: u64, state: pb::TaskState, input: u64, read: u64, written: u64) -> pb::Task {
        pb::Task {
            task_id: id,
            r#type: pb::TaskType::Compaction as i32,
            state: state as i32,
            table: "t".into(),
            spec: Some(pb::TaskSpec {
                spec: Some(pb::task_spec::Spec::Compaction(pb::CompactionSpec {
                    table: "t".into(),
                    inputs: vec![pb::Level {
                        level: 0,
                        files: vec![pb::FileMeta {
                            file_id: 1,
                            size_bytes: input,
                            ..Default::default()
                        }],
                    }],
                    output_level: 1,
                    ..Default::default()
                })),
            }),
            attempt: 1,
            attempts: vec![pb::Attempt {
                attempt: 1,
                progress: Some(pb::TaskProgress {
                    task_id: id,
                    attempt: 1,
                    bytes_read: read,
                    bytes_written: written,
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn progress_counts_states_and_bytes_of_running_attempts() {
        let tasks = [
            task(1, pb::TaskState::Succeeded, 4096, 4096, 4000),
            task(
                2,
                pb::TaskState::Running,
                2 * 1024 * 1024,
                1024 * 1024,
                512 * 1024,
            ),
            task(3, pb::TaskState::Pending, 100, 0, 0),
        ];
        let line = progress_line(&tasks, Duration::from_millis(2500));
        assert_eq!(
            line,
            "compaction: 1/3 done, 1 running, 1 pending | read 1.0 MiB of 2.0 MiB (50%), written 512.0 KiB | 2.5 s"
        );
        let mut waiting = tasks[2].clone();
        let idle = progress_line(std::slice::from_ref(&waiting), Duration::ZERO);
        assert_eq!(idle, "compaction: 0/1 done, 0 running, 1 pending | 0.0 s");
        waiting.waiting_reason = "no live compactor".into();
        assert_eq!(
            progress_line(&[waiting], Duration::from_secs(1)),
            "compaction: 0/1 done, 0 running, 1 pending | task 3 waiting: no live compactor | 1.0 s"
        );
    }

    #[test]
    fn progress_of_an_earlier_attempt_is_not_counted() {
        let mut t = task(1, pb::TaskState::Running, 1000, 900, 800);
        t.attempt = 2;
        assert_eq!(attempt_progress(&t), (0, 0));
    }

    #[test]
    fn failure_names_the_task_table_state_and_last_error() {
        let ok = [task(1, pb::TaskState::Succeeded, 1, 1, 1)];
        assert_eq!(failure_of(&ok), None);
        let mut failed = task(2, pb::TaskState::Failed, 1, 0, 0);
        failed.errors = vec![
            pb::TaskError {
                message: "first".into(),
                ..Default::default()
            },
            pb::TaskError {
                message: "corrupt block in sst 7".into(),
                ..Default::default()
            },
        ];
        let cancelled = task(3, pb::TaskState::Cancelled, 1, 0, 0);
        assert_eq!(
            failure_of(&[ok[0].clone(), failed, cancelled]).as_deref(),
            Some("compaction task 2 of table t failed: corrupt block in sst 7 (and 1 more)")
        );
    }
}
