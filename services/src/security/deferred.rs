//! The deferred audit writer. It owns the audit rows of what is sent and stored nowhere else
//! (event publishes, `campaign.publish`; direct messages, `campaign.message`) from the moment
//! the call that sent it returns until the row is committed, so that a publish never waits on
//! the database: the service hands the row to [`DeferredAudit::push`] (a `try_send` on a bounded
//! queue) and answers.
//!
//! One background task, [`AuditWriter::run`], takes the rows in order and writes them in
//! batches through the audit module's own insert ([`audit::record_all`]: the same SQL and the
//! same columns as the rows written inside changes' transactions). While the database refuses
//! them it keeps the batch in hand and the queue behind it, and retries with back-off (100 ms
//! doubling to 2 s) until the database is back, so rows are written in the order they were
//! pushed. A full queue ([`DeferredConfig::capacity`], 100,000 rows) drops the new row: counted
//! in `ovasabi_audit_deferred_dropped_total{reason="full"}` and logged with its fields (the log
//! is then the only trace of it). At shutdown ([`DeferredAudit::close`]) new rows are refused
//! and the writer tries to write what it still holds until a deadline; what is left then is
//! logged and counted (`reason="shutdown"`).
//!
//! Rows of changes the database stores (a campaign created, a user disabled, ...) are not
//! deferred: they are written in the change's own transaction ([`audit::insert!`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics::{Gauge, counter, describe_counter, describe_gauge, gauge};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::AuditRecord;
use super::audit;
use crate::{Database, ServiceError};

/// Gauge: rows pushed and not yet written (queued, or in the writer's hands).
pub const PENDING: &str = "ovasabi_audit_deferred_pending";
/// Counter, by `reason` (`full`, `stopped`, `rejected`, `shutdown`): rows never written.
pub const DROPPED: &str = "ovasabi_audit_deferred_dropped_total";

/// How the writer queues, batches and retries.
#[derive(Debug, Clone)]
pub struct DeferredConfig {
    /// Rows the queue holds while the database refuses them; past it a new row is dropped
    /// (counted and logged). Memory is taken as rows come, not up front.
    pub capacity: usize,
    /// Most rows written in one transaction.
    pub batch: usize,
    /// Wait after a refused write; it doubles at each refusal up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest one write may take. The pool bounds the wait for a connection; this bounds a
    /// database that stops answering in the middle of a write.
    pub attempt_timeout: Duration,
}

impl Default for DeferredConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            batch: 500,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// Why a row was not queued. It has been counted and logged already.
#[derive(Debug, thiserror::Error)]
pub enum DeferError {
    /// The queue holds `capacity` rows (the database has been refusing them for a while).
    #[error("the deferred audit queue is full ({capacity} rows)")]
    Full { capacity: usize },
    /// [`DeferredAudit::close`] was called.
    #[error("the deferred audit writer has stopped")]
    Stopped,
}

/// Why a write attempt failed; the rows are kept and retried.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("the database did not answer within {after:?}")]
    TimedOut { after: Duration },
    #[error("the database refused the rows")]
    Refused(#[source] ServiceError),
}

/// What the handles and the writer share.
#[derive(Debug)]
struct Shared {
    capacity: usize,
    /// Rows pushed and not yet written or dropped.
    pending: AtomicU64,
    /// [`PENDING`], resolved once: a push is an atomic add, not a registry lookup.
    pending_gauge: Gauge,
}

impl Shared {
    fn add_pending(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
        self.pending_gauge.increment(n as f64);
    }

    fn sub_pending(&self, n: u64) {
        self.pending.fetch_sub(n, Ordering::Relaxed);
        self.pending_gauge.decrement(n as f64);
    }

    /// Counts and logs a row that will never be written: the log line is its only trace.
    fn drop_row(record: &AuditRecord, reason: &'static str) {
        counter!(DROPPED, "reason" => reason).increment(1);
        tracing::error!(
            reason,
            id = %record.id,
            actor = %record.actor,
            action = %record.action,
            entity_type = %record.entity_type,
            entity_id = %record.entity_id,
            after = %record.after.as_ref().map(ToString::to_string).unwrap_or_default(),
            client_addr = record.client_addr.as_deref().unwrap_or_default(),
            at_ms = record.at,
            "audit row dropped"
        );
    }
}

/// What only the handles hold: when the last handle goes, the writer's stop signal resolves.
#[derive(Debug)]
struct Control {
    /// Resolves the writer's stop signal with the deadline of its final flush.
    stop: Mutex<Option<oneshot::Sender<Instant>>>,
    /// The writer's task; its result says whether every row was written.
    task: Mutex<Option<JoinHandle<bool>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle on the writer: cheap to clone, shared by the services that push rows.
#[derive(Clone, Debug)]
pub struct DeferredAudit {
    tx: mpsc::Sender<AuditRecord>,
    shared: Arc<Shared>,
    control: Arc<Control>,
}

impl DeferredAudit {
    /// Starts the writer on `db` as a Tokio task; it runs until [`DeferredAudit::close`] (or
    /// until every handle is dropped).
    pub fn spawn(db: Database, config: DeferredConfig) -> Self {
        describe_gauge!(
            PENDING,
            "Audit rows of publishes and messages not yet written to the database"
        );
        describe_counter!(
            DROPPED,
            "Audit rows of publishes and messages never written, by reason"
        );
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let (stop_tx, stop_rx) = oneshot::channel::<Instant>();
        let shared = Arc::new(Shared {
            capacity: config.capacity.max(1),
            pending: AtomicU64::new(0),
            pending_gauge: gauge!(PENDING),
        });
        let grace = config.attempt_timeout;
        let writer = AuditWriter {
            db,
            rx,
            config,
            shared: shared.clone(),
        };
        // Every handle dropped without `close`: one last bounded attempt, then stop.
        let stop = async move { stop_rx.await.unwrap_or_else(|_| Instant::now() + grace) };
        let task = tokio::spawn(writer.run(stop));
        Self {
            tx,
            shared,
            control: Arc::new(Control {
                stop: Mutex::new(Some(stop_tx)),
                task: Mutex::new(Some(task)),
            }),
        }
    }

    /// Queues `record` for the writer and returns at once.
    ///
    /// # Errors
    /// [`DeferError::Full`] when the queue is full, [`DeferError::Stopped`] after
    /// [`DeferredAudit::close`]; the row is then dropped, and already counted in
    /// `ovasabi_audit_deferred_dropped_total` and logged.
    pub fn push(&self, record: AuditRecord) -> Result<(), DeferError> {
        // Counted before it is sent, so that the writer never takes away more than was added.
        self.shared.add_pending(1);
        let (record, reason, err) = match self.tx.try_send(record) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(r)) => (
                r,
                "full",
                DeferError::Full {
                    capacity: self.shared.capacity,
                },
            ),
            Err(TrySendError::Closed(r)) => (r, "stopped", DeferError::Stopped),
        };
        self.shared.sub_pending(1);
        Shared::drop_row(&record, reason);
        Err(err)
    }

    /// Rows pushed and not yet written (what `ovasabi_audit_deferred_pending` shows).
    pub fn pending(&self) -> u64 {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Stops the writer: rows pushed from now on are dropped (`reason="stopped"`), the rows it
    /// holds are written until `within` has passed, then it ends; rows still unwritten are
    /// logged and counted (`reason="shutdown"`). Returns whether every row was written. Later
    /// calls return at once.
    pub async fn close(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let stop = lock(&self.control.stop).take();
        if let Some(stop) = stop {
            // The writer has ended already when it cannot hear: its task says how.
            let _ = stop.send(deadline);
        }
        let task = lock(&self.control.task).take();
        let Some(task) = task else {
            return self.pending() == 0;
        };
        // The writer bounds its final writes by the deadline; the margin covers one in flight
        // when the stop came (at most `attempt_timeout` in all).
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline + Duration::from_secs(1), task).await {
            Ok(Ok(all_written)) => all_written,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "the deferred audit writer failed");
                false
            }
            Err(_) => {
                abort.abort();
                tracing::error!(
                    pending = self.pending(),
                    "the deferred audit writer did not stop in time: rows it held are lost"
                );
                false
            }
        }
    }
}

/// The task that writes the queued rows (see the module docs).
pub struct AuditWriter {
    db: Database,
    rx: mpsc::Receiver<AuditRecord>,
    config: DeferredConfig,
    shared: Arc<Shared>,
}

impl AuditWriter {
    /// Writes rows as they come until `stop` resolves with the deadline of the final flush;
    /// then refuses new rows, writes what it holds until that deadline, and returns whether
    /// every row was written.
    pub async fn run(mut self, stop: impl Future<Output = Instant>) -> bool {
        tokio::pin!(stop);
        let mut batch: Vec<AuditRecord> = Vec::with_capacity(self.config.batch.max(1));
        let mut backoff = self.config.min_backoff;
        // When the database started refusing, and how many attempts it refused since.
        let mut outage: Option<(Instant, u64)> = None;
        let deadline = loop {
            if batch.is_empty() {
                tokio::select! {
                    deadline = stop.as_mut() => break deadline,
                    n = self.rx.recv_many(&mut batch, self.config.batch.max(1)) => {
                        if n == 0 {
                            // Every handle is gone: nothing more can come.
                            break Instant::now() + self.config.attempt_timeout;
                        }
                    }
                }
            }
            match self.write(&mut batch, self.config.attempt_timeout).await {
                Ok(()) => {
                    backoff = self.config.min_backoff;
                    if let Some((since, attempts)) = outage.take() {
                        tracing::info!(
                            outage_ms = since.elapsed().as_millis() as u64,
                            attempts,
                            pending = self.shared.pending.load(Ordering::Relaxed),
                            "the database takes audit rows again: writing the kept ones"
                        );
                    }
                }
                Err(e) => {
                    let pending = self.shared.pending.load(Ordering::Relaxed);
                    match &mut outage {
                        None => {
                            tracing::warn!(
                                error = %chain(&e),
                                pending,
                                "the database refuses audit rows: keeping them and retrying"
                            );
                            outage = Some((Instant::now(), 1));
                        }
                        Some((_, attempts)) => {
                            *attempts += 1;
                            tracing::debug!(
                                error = %chain(&e),
                                pending,
                                retry_in_ms = backoff.as_millis() as u64,
                                "audit rows still refused"
                            );
                        }
                    }
                    tokio::select! {
                        deadline = stop.as_mut() => break deadline,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        };
        self.flush(batch, deadline).await
    }

    /// The final flush: no new rows; what is held is written until `deadline`.
    async fn flush(mut self, mut batch: Vec<AuditRecord>, deadline: Instant) -> bool {
        self.rx.close();
        let mut backoff = self.config.min_backoff;
        loop {
            if batch.is_empty()
                && self
                    .rx
                    .recv_many(&mut batch, self.config.batch.max(1))
                    .await
                    == 0
            {
                tracing::debug!("deferred audit writer stopped: every row written");
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Err(e) = self
                .write(&mut batch, left.min(self.config.attempt_timeout))
                .await
            {
                tracing::debug!(error = %chain(&e), "audit rows refused during the final flush");
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
        while let Ok(r) = self.rx.try_recv() {
            batch.push(r);
        }
        for r in &batch {
            Shared::drop_row(r, "shutdown");
        }
        self.shared.sub_pending(batch.len() as u64);
        tracing::error!(
            lost = batch.len(),
            "audit rows not written before shutdown (each is logged above)"
        );
        false
    }

    /// Writes `batch`, oldest first, in one transaction; if the database objects to a row
    /// rather than refusing the batch, row by row (a row already there, from an attempt that
    /// committed but whose answer was lost, counts as written; a row the database rejects is
    /// dropped and logged). Removes from `batch` every row it is done with; on an error the
    /// rest stay for the next attempt.
    async fn write(&self, batch: &mut Vec<AuditRecord>, limit: Duration) -> Result<(), WriteError> {
        let attempt = async {
            match audit::record_all(&self.db, batch).await {
                Ok(()) => {
                    self.shared.sub_pending(batch.len() as u64);
                    batch.clear();
                    return Ok(());
                }
                Err(e) if !blames_a_row(&e) => return Err(WriteError::Refused(e)),
                Err(_) => {}
            }
            let mut done = 0;
            let mut result = Ok(());
            for r in batch.iter() {
                match audit::record(&self.db, r).await {
                    Ok(()) | Err(ServiceError::Duplicate { .. }) => {}
                    Err(e) if !blames_a_row(&e) => {
                        result = Err(WriteError::Refused(e));
                        break;
                    }
                    Err(e) => {
                        tracing::error!(
                            error = %chain(&e),
                            id = %r.id,
                            "the database rejects an audit row"
                        );
                        Shared::drop_row(r, "rejected");
                    }
                }
                done += 1;
            }
            batch.drain(..done);
            self.shared.sub_pending(done as u64);
            result
        };
        tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or(Err(WriteError::TimedOut { after: limit }))
    }
}

/// Whether `e` is about one of the rows (a key already there, a value the database rejects)
/// rather than the database refusing to write now (down, locked, unreachable: try again).
fn blames_a_row(e: &ServiceError) -> bool {
    match e {
        ServiceError::Duplicate { .. } | ServiceError::Database(sqlx::Error::Encode(_)) => true,
        ServiceError::Database(sqlx::Error::Database(d)) => {
            let data_exception = d
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some_and(|pg| pg.code().starts_with("22"));
            data_exception || d.kind() != sqlx::error::ErrorKind::Other
        }
        // Down, unreachable or an error of the connection: the rows are fine.
        ServiceError::Unavailable(_) | ServiceError::Database(_) => false,
        // Not database errors: not produced by a write.
        _ => true,
    }
}

/// `e` and its sources, joined with ": " (the sqlx error under a service error says why).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
