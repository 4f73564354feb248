//! A real Sentinel-managed Redis: one master, two replicas and three sentinels (quorum 2) on loopback, from this
//! machine's `redis-server` (`--sentinel`; Debian's `redis-sentinel` package is the same program). Shared by a test
//! binary ([`RedisSentinelGroup::shared`]) or owned by a test that kills the master ([`RedisSentinelGroup::start`]).

use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use deadpool_redis::redis;

use crate::private_redis::{PrivateRedis, RedisOptions};
use crate::redis_security::RedisSecurity;

/// The master set name the sentinels monitor.
pub const MASTER_NAME: &str = "bucket";

/// How long a sentinel waits before it calls an unreachable master down (then the quorum elects a replica).
pub const DOWN_AFTER: Duration = Duration::from_millis(1_000);

/// How long the sentinels give an election before they start another: a failover not done by then failed once.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_millis(10_000);

/// How long the group may take to form (replicas in sync, every sentinel seeing both replicas and its peers).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// A master, two replicas, three sentinels.
pub struct RedisSentinelGroup {
    /// `[master, replica, replica]` as started; roles change with failovers ([`RedisSentinelGroup::master_port`]).
    servers: Vec<Mutex<PrivateRedis>>,
    sentinels: Vec<Mutex<PrivateRedis>>,
    /// The sentinels' directories (their configuration files, which they rewrite).
    dirs: Vec<std::path::PathBuf>,
    /// The password (servers and sentinels alike) and TLS, if any.
    security: RedisSecurity,
}

impl RedisSentinelGroup {
    /// The group every test of this test binary shares, started on first use and killed when the process ends.
    pub fn shared() -> &'static RedisSentinelGroup {
        static SHARED: OnceLock<RedisSentinelGroup> = OnceLock::new();
        SHARED.get_or_init(|| Self::launch(true, RedisSecurity::default()))
    }

    /// A group of the caller's own, killed when dropped: for a test that kills the master.
    pub fn start() -> Self {
        Self::launch(false, RedisSecurity::default())
    }

    /// A group of the caller's own whose servers and sentinels all require `security`'s password (and speak TLS).
    pub fn start_with(security: RedisSecurity) -> Self {
        Self::launch(false, security)
    }

    fn launch(tied_to_process: bool, security: RedisSecurity) -> Self {
        let start = |mut options: RedisOptions| {
            // A sentinel's password is in its configuration file; it reaches a TLS master with TLS as replicas do.
            let sentinel = options.args.iter().any(|arg| arg == "--sentinel");
            let extra = security.server_args(false).into_iter().skip(if sentinel && security.password.is_some() {
                4
            } else {
                0
            });
            options.args.extend(extra);
            let options = RedisOptions { tied_to_process, tls: security.tls.clone(), ..options };
            PrivateRedis::launch(options).unwrap_or_else(|e| panic!("{e}"))
        };
        // No delay before a replica's first sync: the group is formed once both replicas have synced.
        let master = start(RedisOptions {
            args: vec!["--repl-diskless-sync-delay".to_owned(), "0".to_owned()],
            ..RedisOptions::default()
        });
        let master_port = master.port();
        let replicaof = ["--replicaof".to_owned(), "127.0.0.1".to_owned(), master_port.to_string()];
        let replicas: Vec<PrivateRedis> =
            (0..2).map(|_| start(RedisOptions { args: replicaof.to_vec(), ..RedisOptions::default() })).collect();
        let mut dirs = Vec::new();
        let sentinels = (0..3)
            .map(|_| {
                let dir = tempfile::Builder::new().prefix("bucket-sentinel-").tempdir().expect("a temporary dir");
                let dir = dir.keep();
                if tied_to_process {
                    crate::process::remove_at_exit(dir.clone());
                }
                dirs.push(dir.clone());
                let file = dir.join("sentinel.conf");
                let conf = format!(
                    "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {}\n\
                     sentinel failover-timeout {MASTER_NAME} {}\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    DOWN_AFTER.as_millis(),
                    FAILOVER_TIMEOUT.as_millis()
                );
                // The master's password, the sentinel's own, and the one it gives its peers.
                let conf = match &security.password {
                    Some(pass) => format!(
                        "{conf}sentinel auth-pass {MASTER_NAME} {pass}\nrequirepass {pass}\nsentinel sentinel-pass {pass}\n"
                    ),
                    None => conf,
                };
                std::fs::write(&file, conf).expect("write sentinel.conf");
                start(RedisOptions {
                    dir: Some(dir),
                    config_file: Some(file),
                    args: vec!["--sentinel".to_owned()],
                    ..RedisOptions::default()
                })
            })
            .collect::<Vec<_>>();
        let group = Self {
            servers: std::iter::once(master).chain(replicas).map(Mutex::new).collect(),
            sentinels: sentinels.into_iter().map(Mutex::new).collect(),
            dirs,
            security,
        };
        group.wait_until_formed(FORM_TIMEOUT);
        group
    }

    /// The sentinels' URLs, comma-separated: what `REDIS_URL` holds in sentinel mode.
    pub fn url(&self) -> String {
        self.sentinels.iter().map(|s| self.security.url(lock(s).port())).collect::<Vec<_>>().join(",")
    }

    /// How the servers and sentinels are secured.
    pub fn security(&self) -> &RedisSecurity {
        &self.security
    }

    /// Server `i` (0: the first master, 1 and 2: its replicas), to kill or restart it.
    pub fn server(&self, i: usize) -> MutexGuard<'_, PrivateRedis> {
        lock(&self.servers[i])
    }

    /// The master's port as the first sentinel that answers reports it.
    pub fn master_port(&self) -> u16 {
        self.sentinels
            .iter()
            .find_map(|s| {
                let port = lock(s).port();
                let mut conn = self.security.connection(port).ok()?;
                let (_, port): (String, u16) =
                    redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER_NAME).query(&mut conn).ok()?;
                Some(port)
            })
            .expect("a sentinel that knows the master")
    }

    /// SIGKILLs the current master; the sentinels elect a replica after [`DOWN_AFTER`] plus an election. Returns the
    /// killed server's index.
    pub fn kill_master(&self) -> usize {
        let port = self.master_port();
        let index = (0..self.servers.len()).find(|&i| self.server(i).port() == port).expect("the master is ours");
        self.server(index).kill();
        index
    }

    /// Waits until the sentinels name a master other than `old` that answers as master, and returns its port.
    pub fn wait_for_new_master(&self, old: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let port = self.master_port();
            if port != old && role(&self.security, port).as_deref() == Some("master") {
                return port;
            }
            assert!(Instant::now() < deadline, "no new master after {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_until_formed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let replicas_synced = (1..3).all(|i| {
                let port = self.server(i).port();
                info(&self.security, port, "replication").is_some_and(|s| s.contains("master_link_status:up"))
            });
            let sentinels_see_all = self.sentinels.iter().all(|s| {
                let port = lock(s).port();
                info(&self.security, port, "sentinel").is_some_and(|s| s.contains("slaves=2,sentinels=3"))
            });
            if replicas_synced && sentinels_see_all {
                return;
            }
            assert!(Instant::now() < deadline, "the sentinel group did not form in {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisSentinelGroup {
    fn drop(&mut self) {
        for sentinel in &self.sentinels {
            lock(sentinel).kill();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn lock(server: &Mutex<PrivateRedis>) -> MutexGuard<'_, PrivateRedis> {
    server.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `INFO <section>` of the server at `port`, `None` when it does not answer.
fn info(security: &RedisSecurity, port: u16, section: &str) -> Option<String> {
    let mut conn = security.connection(port).ok()?;
    redis::cmd("INFO").arg(section).query(&mut conn).ok()
}

/// The first field of `ROLE` (`master`, `slave`) of the server at `port`.
fn role(security: &RedisSecurity, port: u16) -> Option<String> {
    let mut conn = security.connection(port).ok()?;
    let reply: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
    match reply.first()? {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}
