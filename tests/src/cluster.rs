//! A scheduler started as a real process, with clients for both of its services and the
//! few steps most scheduler tests begin with (a table, flushes through a fake flusher).

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::path::Path;
use std::time::Duration;

use proto::v1 as pb;
use tonic::transport::Channel;

use crate::fake::{FakeReplayer, FakeWorker, file};
use crate::{Ports, Proc, service_env, wait_healthy};

/// A running scheduler process.
pub struct Sched {
    pub proc: Proc,
    pub ports: Ports,
    pub admin: pb::admin_client::AdminClient<Channel>,
    pub api: pb::scheduler_client::SchedulerClient<Channel>,
    /// Holds every table (the scheduler assigns each to a replayer), so flush requests
    /// come from the owning replay attempt.
    pub replayer: FakeReplayer,
}

/// One flush to push through a fake flusher: (memtable id, last seq, smallest key,
/// largest key, file size).
pub type Flush<'a> = (u64, u64, &'a [u8], &'a [u8], u64);

impl Sched {
    /// Starts the scheduler binary in `dir` (catalog and storage there) with `env`
    /// overriding the defaults; on `ports` when given (a restart), else on free ports.
    pub async fn start(dir: &Path, env: &[(&str, &str)], ports: Option<Ports>) -> Self {
        let ports = ports.unwrap_or_else(Ports::free);
        let mut full = service_env("scheduler", ports, dir);
        for (k, v) in env {
            full.retain(|(ek, _)| ek != k);
            full.push((k.to_string(), v.to_string()));
        }
        let proc = Proc::start("scheduler", "scheduler", dir, &[], &full);
        tokio::task::block_in_place(|| wait_healthy(&proc, ports.http));
        let url = format!("http://{}", ports.grpc_addr());
        let replayer = FakeReplayer::start(&ports.grpc_addr()).await;
        Self {
            replayer,
            proc,
            ports,
            admin: pb::admin_client::AdminClient::connect(url.clone())
                .await
                .unwrap(),
            api: pb::scheduler_client::SchedulerClient::connect(url)
                .await
                .unwrap(),
        }
    }

    pub async fn create_table(&mut self, name: &str) {
        self.admin
            .create_table(pb::CreateTableRequest {
                name: name.into(),
                columns: vec![],
            })
            .await
            .unwrap();
    }

    /// Asks for the flush of memtable `memtable_id` holding seqs `last_seq-9..=last_seq`,
    /// as the replayer holding the table would.
    pub async fn request_flush(
        &mut self,
        table: &str,
        memtable_id: u64,
        last_seq: u64,
    ) -> Result<u64, tonic::Status> {
        let (replay_task_id, replay_attempt) = self.replayer.owner(table).await;
        self.api
            .request_flush(pb::RequestFlushRequest {
                table: table.into(),
                memtable_id,
                first_seq: last_seq - 9,
                last_seq,
                size_bytes: 1000,
                replayer_address: self.replayer.address.clone(),
                after_seq: last_seq - 10,
                replay_task_id,
                replay_attempt,
            })
            .await
            .map(|r| r.into_inner().task_id)
    }

    /// Requests each flush and completes it through `w` with one L0 file.
    pub async fn flush_through(&mut self, w: &mut FakeWorker, table: &str, flushes: &[Flush<'_>]) {
        for (memtable_id, seq, lo, hi, size) in flushes {
            self.request_flush(table, *memtable_id, *seq).await.unwrap();
            let d = w
                .next_dispatch(Duration::from_secs(10))
                .await
                .expect("dispatched");
            let mut f = file(d.output_file_ids[0], lo, hi, *seq);
            f.size_bytes = *size;
            w.complete_flush(&d, vec![f]).await.unwrap();
        }
    }
}
