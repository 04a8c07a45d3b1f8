//! The periodic Cleanup trigger. Every `cleanup.interval` the scheduler lists the shared
//! storage, then — after the listing, so nothing created since can be mistaken for
//! garbage — takes the set of file ids that are or may become part of a manifest
//! ([`crate::core::Core::referenced_file_ids`]) and each table's checkpoint, and queues one
//! Cleanup task per table holding garbage older than `cleanup.grace_period`: SSTs nothing
//! references, WAL segments wholly covered by the checkpoint. A compactor deletes them.
//!
//! Why that order is safe: file ids are never reused, so an id that is unreferenced at the
//! snapshot can never become referenced again (a stale attempt that wrote it is refused at
//! commit). A file whose id was allocated after the listing is not in the listing. Objects
//! of a table that no longer exists are garbage too.
//!
//! Readers (`storage-admin get/scan`) fetch a manifest and then its files: a file a
//! compaction removed stays for `cleanup.grace_period` counted from that commit, so a reader
//! holding the previous version finds it (the grace period is how long a version is
//! retained). Orphans (never committed) wait the grace period from their creation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use catalog::{TaskKind, TaskSpec};
use compactor::cleanup::{ListedObject, ObjectKind, parse_table_object, select_garbage};
use storage::Storage;
use tokio_util::sync::CancellationToken;

use crate::service::SchedulerState;

/// One listed table's objects.
#[derive(Default)]
struct Listed {
    ssts: Vec<ListedObject>,
    wal: Vec<ListedObject>,
}

/// Runs [`plan_once`] every `cleanup.interval` until shutdown.
pub async fn cleanup_loop(state: Arc<SchedulerState>, shutdown: CancellationToken) {
    let interval = state.config().cleanup.interval.get();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        match plan_once(&state, state.storage()).await {
            Ok(ids) if !ids.is_empty() => tracing::info!(tasks = ids.len(), "cleanup queued"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cleanup planning failed; trying again next interval")
            }
        }
    }
}

/// Lists storage and queues the Cleanup tasks due now; returns their ids.
pub async fn plan_once(state: &SchedulerState, storage: &Storage) -> anyhow::Result<Vec<u64>> {
    let listing = storage.list(&storage::paths::tables_root()).await?;
    runtime::failpoint::hit("scheduler.cleanup.after_list").await;
    let mut by_table: BTreeMap<String, Listed> = BTreeMap::new();
    for meta in listing {
        let path = meta.location.to_string();
        let Some(parsed) = parse_table_object(&path) else {
            continue;
        };
        let listed = by_table
            .entry(parsed.table.as_str().to_owned())
            .or_default();
        let object = ListedObject {
            path,
            size: meta.size,
            last_modified_ms: meta.last_modified.timestamp_millis(),
        };
        match parsed.kind {
            ObjectKind::Sst => listed.ssts.push(object),
            ObjectKind::Wal => listed.wal.push(object),
        }
    }
    let grace_ms = state.config().cleanup.grace_period.get().as_millis() as i64;
    let dry_run = state.config().cleanup.dry_run;
    let ids = state
        .mutate(|c, now| {
            let Some(referenced) = c.referenced_file_ids(now, grace_ms) else {
                return Vec::new();
            };
            let busy: BTreeSet<String> = c
                .tasks()
                .filter(|t| t.kind() == TaskKind::Cleanup && !t.state.is_final())
                .map(|t| t.spec.table().to_owned())
                .collect();
            let mut ids = Vec::new();
            for (table, listed) in &by_table {
                if busy.contains(table) {
                    continue;
                }
                // A dropped table: everything is garbage.
                let checkpoint = c.manifest(table).map_or(u64::MAX, |m| m.checkpoint);
                let mut g = select_garbage(
                    &listed.ssts,
                    &listed.wal,
                    &referenced,
                    checkpoint,
                    now,
                    grace_ms,
                );
                // A quarantined segment stays (its writes come back when it is released
                // and repaired) although the checkpoint passed it.
                let kept = c.wal_skips(table);
                if !kept.is_empty()
                    && let Ok(name) = storage::TableName::new(table.as_str())
                {
                    let kept: BTreeSet<String> = kept
                        .iter()
                        .map(|s| storage::paths::wal_segment(&name, *s).to_string())
                        .collect();
                    g.wal_paths.retain(|p| !kept.contains(p));
                }
                // A dropped table's newest segment goes too (nothing will replay it), so
                // the name can be used again.
                if c.table(table).is_none() {
                    for w in &listed.wal {
                        if now - w.last_modified_ms >= grace_ms && !g.wal_paths.contains(&w.path) {
                            g.wal_paths.push(w.path.clone());
                        }
                    }
                }
                if g.is_empty() {
                    continue;
                }
                let spec = TaskSpec::Cleanup {
                    table: table.clone(),
                    sst_paths: g.sst_paths,
                    wal_paths: g.wal_paths,
                    dry_run,
                };
                match c.submit(spec, 10, now) {
                    Ok(id) => ids.push(id),
                    Err(e) => tracing::debug!(table, error = %e, "cleanup not queued"),
                }
            }
            crate::service::trace_new_tasks(c);
            ids
        })
        .await;
    if !ids.is_empty() {
        state.wake();
    }
    Ok(ids)
}
