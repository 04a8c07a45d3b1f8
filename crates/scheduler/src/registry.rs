//! The registry of workers: who registered, with which kind, address and slots, and when
//! each was last heard from. Pure state: time is passed in, so liveness decisions are
//! tested without a clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proto::v1::{TaskProgress, WorkerKind};

/// A registered worker.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: u64,
    pub kind: WorkerKind,
    pub name: String,
    pub address: String,
    pub slots: u32,
    pub version: String,
    pub registered_at: Instant,
    pub last_heartbeat: Instant,
    /// Progress of the attempts it reported in its last heartbeat.
    pub running: Vec<TaskProgress>,
}

/// All registered workers.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: u64,
    workers: BTreeMap<u64, Worker>,
}

/// What registration needs to know.
#[derive(Debug, Clone)]
pub struct Registration {
    pub kind: WorkerKind,
    pub name: String,
    pub address: String,
    pub slots: u32,
    pub version: String,
}

impl Registry {
    /// Registers a worker. A worker that registers again with the same kind and address
    /// (it restarted) replaces its old entry.
    pub fn register(&mut self, reg: Registration, now: Instant) -> u64 {
        self.workers
            .retain(|_, w| !(w.kind == reg.kind && w.address == reg.address));
        self.next_id += 1;
        let id = self.next_id;
        let name = if reg.name.is_empty() {
            reg.address.clone()
        } else {
            reg.name
        };
        self.workers.insert(
            id,
            Worker {
                id,
                kind: reg.kind,
                name,
                address: reg.address,
                slots: reg.slots,
                version: reg.version,
                registered_at: now,
                last_heartbeat: now,
                running: Vec::new(),
            },
        );
        id
    }

    /// Records a heartbeat; `false` when the id is unknown (the worker must re-register).
    pub fn heartbeat(&mut self, id: u64, running: Vec<TaskProgress>, now: Instant) -> bool {
        match self.workers.get_mut(&id) {
            Some(w) => {
                w.last_heartbeat = now;
                w.running = running;
                true
            }
            None => false,
        }
    }

    /// Whether a worker was heard from within `timeout`.
    pub fn is_alive(w: &Worker, now: Instant, timeout: Duration) -> bool {
        now.saturating_duration_since(w.last_heartbeat) <= timeout
    }

    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    pub fn get(&self, id: u64) -> Option<&Worker> {
        self.workers.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(kind: WorkerKind, addr: &str) -> Registration {
        Registration {
            kind,
            name: String::new(),
            address: addr.to_owned(),
            slots: 2,
            version: "t".to_owned(),
        }
    }

    #[test]
    fn reregistration_replaces_and_unknown_heartbeat_is_refused() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let a = r.register(reg(WorkerKind::Flusher, "h:1"), t0);
        let b = r.register(reg(WorkerKind::Flusher, "h:1"), t0);
        assert_ne!(a, b);
        assert_eq!(r.workers().count(), 1);
        assert!(!r.heartbeat(a, vec![], t0));
        assert!(r.heartbeat(b, vec![], t0));
        assert_eq!(r.get(b).map(|w| w.name.as_str()), Some("h:1"));
    }

    #[test]
    fn liveness_follows_the_heartbeat_timeout() {
        let t0 = Instant::now();
        let mut r = Registry::default();
        let id = r.register(reg(WorkerKind::Compactor, "h:2"), t0);
        let w = r.get(id).cloned().expect("registered");
        let timeout = Duration::from_secs(10);
        assert!(Registry::is_alive(
            &w,
            t0 + Duration::from_secs(10),
            timeout
        ));
        assert!(!Registry::is_alive(
            &w,
            t0 + Duration::from_secs(11),
            timeout
        ));
    }
}
