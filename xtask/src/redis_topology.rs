//! The Redis of the native stack when `--redis cluster` or `--redis sentinel` is asked for: a local Redis Cluster
//! (3 masters, 3 replicas) or a Sentinel group (1 master, 2 replicas, 3 sentinels), each server from the installed
//! `redis-server` through the test kit's launcher in a directory of its own, formed with `redis-cli` as an operator
//! would, and stopped in reverse order when dropped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bucket_testkit::{PrivateRedis, RedisOptions};

use crate::process;

/// The master set name the sentinels monitor (`BUCKET_REDIS_SENTINEL_MASTER`).
pub const MASTER_NAME: &str = "bucket";

/// How long forming may take (about 2 s for a cluster here).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);

/// Which Redis the stack runs.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// One server.
    Standalone,
    /// A Redis Cluster of 3 masters and 3 replicas.
    Cluster,
    /// One master, two replicas, three sentinels.
    Sentinel,
}

impl Topology {
    /// `BUCKET_REDIS_MODE`.
    pub fn mode(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Cluster => "cluster",
            Topology::Sentinel => "sentinel",
        }
    }
}

/// The running servers and what the API is given: `REDIS_URL` (comma-separated seeds or sentinels).
pub struct Servers {
    /// `REDIS_URL`.
    pub url: String,
    /// Data servers first, sentinels last; dropped (killed) in reverse.
    servers: Vec<PrivateRedis>,
    /// A `redis-cli` command that reaches it, for the printed URLs.
    pub cli: String,
}

impl Drop for Servers {
    fn drop(&mut self) {
        while let Some(server) = self.servers.pop() {
            drop(server);
        }
    }
}

fn launch(dir: &Path, port: u16, args: &[String], config_file: Option<std::path::PathBuf>) -> Result<PrivateRedis> {
    let options = RedisOptions {
        port,
        dir: Some(dir.join(port.to_string())),
        own_process_group: true,
        args: args.to_vec(),
        config_file,
        ..RedisOptions::default()
    };
    PrivateRedis::launch(options).with_context(|| format!("could not start redis-server on port {port}"))
}

/// `redis-cli -p <port> <args>`'s output, or `None` when it fails.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = process::capture(Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args)).ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Six cluster nodes in `dir`, formed with `redis-cli --cluster create`, every node saying `cluster_state:ok`.
pub fn start_cluster(dir: &Path) -> Result<Servers> {
    let args: Vec<String> =
        ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0"]
            .map(String::from)
            .to_vec();
    let mut servers = Vec::new();
    for _ in 0..6 {
        servers.push(launch(dir, bucket_testkit::free_cluster_port(), &args, None)?);
    }
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]).args(servers.iter().map(PrivateRedis::addr));
    create.args(["--cluster-replicas", "1", "--cluster-yes"]);
    process::run_checked(&mut create).context("redis-cli --cluster create")?;
    let ports: Vec<u16> = servers.iter().map(PrivateRedis::port).collect();
    let formed = process::wait_until(FORM_TIMEOUT, || {
        ports.iter().all(|&port| cli(port, &["cluster", "info"]).is_some_and(|info| info.contains("cluster_state:ok")))
    });
    if !formed {
        bail!("the cluster did not reach cluster_state:ok in {FORM_TIMEOUT:?}");
    }
    let url = ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
    Ok(Servers { url, cli: format!("redis-cli -c -p {}", ports[0]), servers })
}

/// A master and two replicas in `dir`, and three sentinels (quorum 2) watching it as [`MASTER_NAME`], waited for
/// until every sentinel sees both replicas and its two peers.
pub fn start_sentinel(dir: &Path) -> Result<Servers> {
    let free = || process::free_port();
    let master = launch(dir, free()?, &["--repl-diskless-sync-delay".into(), "0".into()], None)?;
    let master_port = master.port();
    let mut servers = vec![master];
    let replicaof = ["--replicaof".to_owned(), "127.0.0.1".to_owned(), master_port.to_string()];
    for _ in 0..2 {
        servers.push(launch(dir, free()?, &replicaof, None)?);
    }
    let mut sentinels = Vec::new();
    for _ in 0..3 {
        let port = free()?;
        let conf_dir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&conf_dir)?;
        // A sentinel rewrites its configuration file, so each has its own.
        let conf = conf_dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds \
                 {MASTER_NAME} 5000\nsentinel failover-timeout {MASTER_NAME} 30000\n"
            ),
        )?;
        sentinels.push(port);
        servers.push(launch(dir, port, &["--sentinel".to_owned()], Some(conf))?);
    }
    let formed = process::wait_until(FORM_TIMEOUT, || {
        sentinels
            .iter()
            .all(|&port| cli(port, &["info", "sentinel"]).is_some_and(|info| info.contains("slaves=2,sentinels=3")))
    });
    if !formed {
        bail!("the sentinels did not see both replicas and each other in {FORM_TIMEOUT:?}");
    }
    let url = sentinels.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",");
    let cli = format!("redis-cli -p {} sentinel get-master-addr-by-name {MASTER_NAME}", sentinels[0]);
    Ok(Servers { url, cli, servers })
}
