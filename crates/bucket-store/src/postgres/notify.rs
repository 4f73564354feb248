//! PostgreSQL's side of `invalidation.rs`: resets and policy changes announced with `NOTIFY`, heard with `LISTEN`.
//!
//! The channel is per schema (`bucket:<schema>`), so stores on different schemas of one database do not hear each
//! other. The listener holds one session of its own beside the pool, adds nothing to a decision, and survives an
//! outage as the Redis listener does: every cache entry is dropped whenever it (re)subscribes or loses the
//! session, a `SELECT 1` every [`PING_EVERY`] finds a session that stalled without closing, and the caches' own
//! lifetimes bound whatever is missed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, Connection};

use super::tls::Tls;
use super::{session, PostgresConfig, PostgresStore};
use crate::invalidation::Invalidator;
use crate::StoreError;

/// How often an idle session is probed.
const PING_EVERY: Duration = Duration::from_secs(1);
/// First and longest wait between attempts to listen again.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(2);

/// Where a store's changes are announced.
pub(super) struct Channel {
    /// The channel's name, as `pg_notify` takes it.
    pub name: String,
    /// `LISTEN "<name>"`.
    listen_sql: String,
    tls: Arc<Tls>,
    connect_timeout: Duration,
}

impl Channel {
    pub(super) fn new(config: &PostgresConfig, tls: Arc<Tls>) -> Result<Self, StoreError> {
        let mut name = format!("bucket:{}", config.schema.as_deref().unwrap_or("public"));
        // Channel names are identifiers: at most 63 bytes. A shared truncated prefix only costs extra invalidations.
        while name.len() > 63 {
            name.pop();
        }
        let listen_sql = format!("LISTEN {}", session::quote_identifier(&name)?);
        Ok(Self { name, listen_sql, tls, connect_timeout: config.connect_timeout })
    }

    /// A session listening on the channel, and the payloads it receives; the receiver ends with the session.
    async fn subscribe(&self) -> Result<(Client, mpsc::UnboundedReceiver<String>), tokio_postgres::Error> {
        let (client, notifications) = match self.tls.connector() {
            None => {
                let (client, connection) =
                    tokio_postgres::connect(self.tls.driver_url(), tokio_postgres::NoTls).await?;
                (client, forward(connection))
            }
            Some(connector) => {
                let (client, connection) = tokio_postgres::connect(self.tls.driver_url(), connector.clone()).await?;
                (client, forward(connection))
            }
        };
        client.batch_execute(&self.listen_sql).await?;
        Ok((client, notifications))
    }
}

/// Drives the session on a task of its own, handing each notification's payload over until the session ends.
fn forward<S, T>(mut connection: Connection<S, T>) -> mpsc::UnboundedReceiver<String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                if sender.send(n.payload().to_owned()).is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// Starts the listener on the current tokio runtime; it ends by itself once the caches are dropped.
pub fn spawn_listener(store: PostgresStore, invalidator: Invalidator) -> tokio::task::JoinHandle<()> {
    tokio::spawn(listen(store.channel.clone(), invalidator))
}

async fn listen(channel: Arc<Channel>, invalidator: Invalidator) {
    let mut wait = FIRST_RETRY;
    loop {
        if let Ok(Ok((client, notifications))) =
            tokio::time::timeout(channel.connect_timeout, channel.subscribe()).await
        {
            wait = FIRST_RETRY;
            // Anything announced before the session listened was not heard.
            if !invalidator.all() || !follow(&client, notifications, &invalidator, channel.connect_timeout).await {
                return;
            }
        }
        if !invalidator.all() {
            return;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(LONGEST_RETRY);
    }
}

/// Applies notifications until the session fails (`true`: listen again) or the caches are gone (`false`).
async fn follow(
    client: &Client,
    mut notifications: mpsc::UnboundedReceiver<String>,
    invalidator: &Invalidator,
    probe_timeout: Duration,
) -> bool {
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            key = notifications.recv() => {
                let Some(key) = key else { return true };
                if !invalidator.key(&key) {
                    return false;
                }
            }
            _ = ping.tick() => {
                if !matches!(tokio::time::timeout(probe_timeout, client.simple_query("SELECT 1")).await, Ok(Ok(_))) {
                    return true;
                }
                if !invalidator.alive() {
                    return false;
                }
            }
        }
    }
}
