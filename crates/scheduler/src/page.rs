//! The LSM picture: the scheduler's HTTP port serves `/lsm`, a self-contained page (no
//! external assets) that draws each table's levels — files as boxes placed by key range
//! and sized by bytes, those held by a queued or running compaction highlighted — with the queue and
//! the workers, refreshed every two seconds from `/lsm.json`.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use catalog::TaskState;
use serde_json::{Value, json};

use crate::service::SchedulerState;

const PAGE: &str = include_str!("page/lsm.html");

fn key(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if s.chars().all(|c| !c.is_control()) => s.to_owned(),
        _ => format!(
            "0x{}",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// The page's data.
pub async fn snapshot(state: &SchedulerState) -> Value {
    state
        .read(|c, now| {
            let tables: Vec<Value> = c
                .tables()
                .filter_map(|t| {
                    let m = c.manifest(&t.name)?;
                    let levels: Vec<Value> = m
                        .levels
                        .levels
                        .iter()
                        .enumerate()
                        .map(|(l, files)| {
                            json!({
                                "level": l,
                                "files": files.iter().map(|f| json!({
                                    "id": f.id, "size": f.size,
                                    "smallest": key(&f.smallest), "largest": key(&f.largest),
                                    "smallest_hex": f.smallest.iter().map(|x| format!("{x:02x}")).collect::<String>(),
                                    "largest_hex": f.largest.iter().map(|x| format!("{x:02x}")).collect::<String>(),
                                    "entries": f.entries, "tombstones": f.tombstones,
                                    "locked": c.locked_files().contains_key(&f.id),
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    Some(json!({ "name": t.name, "version": m.version, "checkpoint": m.checkpoint, "levels": levels }))
                })
                .collect();
            let queue: Vec<Value> = c
                .counts()
                .iter()
                .map(|(k, v)| json!({ "type": k.label(), "pending": v.pending, "running": v.running, "failed": v.failed }))
                .collect();
            let running: Vec<Value> = c
                .tasks()
                .filter(|t| t.state == TaskState::Running)
                .map(|t| json!({ "id": t.id, "type": t.kind().label(), "table": t.spec.table(), "attempt": t.attempt }))
                .collect();
            let workers: Vec<Value> = c
                .workers()
                .map(|w| json!({
                    "id": w.record.id, "kind": w.record.kind, "address": w.record.address,
                    "slots": w.record.slots, "running": w.assigned.len(), "alive": c.is_alive(w, now),
                }))
                .collect();
            json!({ "tables": tables, "queue": queue, "running": running, "workers": workers })
        })
        .await
}

/// `/lsm` and `/lsm.json`.
pub fn router(state: Arc<SchedulerState>) -> Router {
    Router::new()
        .route(
            "/lsm",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
            }),
        )
        .route(
            "/lsm.json",
            get(move || {
                let state = state.clone();
                async move {
                    let body = snapshot(&state).await.to_string();
                    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
            }),
        )
}
