//! Decisions per second of the Redis store against one standalone Redis, a Redis Cluster of 1 master and one of 3
//! masters (no replicas, so the masters alone are measured), all on this machine, with the CPU every process used,
//! so that the output says what limited the rate: on a small machine the client and the masters share the cores.
//!
//! Each setup gets `TASKS` concurrent tasks checking random users out of `USERS` (nearly every check a script run on
//! a master, as "many users" is in the HTTP bench), measured for `MEASURE` after a `WARMUP`; the setups are
//! measured in turn, `ROUNDS` times, so that a change of the machine's load hits them alike. CPU seconds come from
//! `/proc/<pid>/stat` (each redis-server, found by `INFO server`'s `process_id`, and this process) and `/proc/stat`
//! (the whole machine, other users included), and the share of the time some task waited for a CPU from
//! `/proc/pressure/cpu`, which tells a CPU-bound run from one bound by round trips. Prints one `MASTERS {json}` line for `cargo xtask bench --only
//! masters`, which writes it into docs/scaling.md.
//!
//! Run: `cargo bench -p bucket-store --bench cluster_masters`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucket_core::Policy;
use bucket_store::redis::{RedisConfig, RedisMode, RedisStore};
use bucket_store::Store;
use bucket_testkit::redis_server::config;
use bucket_testkit::{redis, ClusterShape, PrivateRedis, RedisCluster};
use serde_json::{json, Value};

const TASKS: usize = 64;
const USERS: u64 = 1_000_000;
const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
/// Clock ticks per second in /proc's CPU times (`USER_HZ`, which the kernel's ABI fixes at 100).
const USER_HZ: f64 = 100.0;
/// A process at this share of one core or more is taken as saturated (a redis-server runs commands on one thread).
const SATURATED: f64 = 0.9;
/// Tasks waiting for a CPU at least this share of the time: the cores, not the servers, set the pace.
const WAITING: f64 = 0.5;

/// What one setup runs on: its servers (killed when dropped) and a store in the matching mode.
struct Setup {
    label: &'static str,
    masters: usize,
    store: RedisStore,
    /// `(port, pid)` of every redis-server serving it.
    servers: Vec<(u16, u32)>,
    _standalone: Option<PrivateRedis>,
    _cluster: Option<RedisCluster>,
}

/// CPU ticks of every process that matters, and of the machine, at one instant.
struct Cpu {
    at: Instant,
    bench: u64,
    redis: Vec<u64>,
    machine_busy: u64,
    /// Microseconds in which at least one runnable task waited for a CPU (PSI's `some total`).
    cpu_waited_us: u64,
    /// Socket reads the servers processed, summed (`INFO stats`).
    reads: u64,
}

/// One measured window of one setup.
struct Sample {
    decisions: u64,
    errors: u64,
    wall_s: f64,
    bench_s: f64,
    redis_s: Vec<f64>,
    machine_s: f64,
    cpu_waited_s: f64,
    reads: u64,
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` (or `--all-targets`) does not, and must not start
    // servers for a minute and a half.
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("cluster_masters: skipped (not run by `cargo bench`)");
        return;
    }
    let load_before = load_average();
    let standalone = PrivateRedis::start();
    let one = RedisCluster::start_shaped(ClusterShape::masters_only(1));
    let three = RedisCluster::start_shaped(ClusterShape::masters_only(3));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let setups = runtime.block_on(async {
        vec![
            Setup::standalone(standalone),
            Setup::cluster("cluster, 1 master", one),
            Setup::cluster("cluster, 3 masters", three),
        ]
    });
    let mut samples: Vec<Vec<Sample>> = setups.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for (setup, samples) in setups.iter().zip(&mut samples) {
            let sample = runtime.block_on(run(setup));
            eprintln!(
                "round {}: {:<20} {:>8.0} decisions/s, {} errors",
                round + 1,
                setup.label,
                sample.decisions as f64 / sample.wall_s,
                sample.errors
            );
            samples.push(sample);
        }
    }
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let rows: Vec<Value> = setups.iter().zip(&samples).map(|(setup, samples)| row(setup, samples, cpus)).collect();
    println!(
        "MASTERS {}",
        json!({
            "tasks": TASKS, "users": USERS, "warmup_s": WARMUP.as_secs_f64(), "seconds": MEASURE.as_secs_f64(),
            "rounds": ROUNDS, "cpus": cpus, "pool_size": RedisConfig::default().pool_size,
            "load_before": load_before, "load_after": load_average(), "rows": rows,
        })
    );
}

impl Setup {
    fn standalone(server: PrivateRedis) -> Self {
        let store = RedisStore::connect(config(&server.url())).expect("a valid configuration");
        let servers = vec![(server.port(), pid_of(server.port()))];
        Self { label: "standalone", masters: 1, store, servers, _standalone: Some(server), _cluster: None }
    }

    fn cluster(label: &'static str, cluster: RedisCluster) -> Self {
        let mut cfg = config(&cluster.url());
        cfg.mode = RedisMode::Cluster;
        let store = RedisStore::connect(cfg).expect("a valid configuration");
        let servers = cluster.master_ports().into_iter().map(|port| (port, pid_of(port))).collect();
        let masters = cluster.shape().masters;
        Self { label, masters, store, servers, _standalone: None, _cluster: Some(cluster) }
    }

    fn cpu(&self) -> Cpu {
        Cpu {
            at: Instant::now(),
            bench: process_ticks("self"),
            redis: self.servers.iter().map(|(_, pid)| process_ticks(&pid.to_string())).collect(),
            machine_busy: machine_busy_ticks(),
            cpu_waited_us: cpu_waited_us(),
            reads: self.servers.iter().map(|&(port, _)| stat(port, "total_reads_processed")).sum(),
        }
    }
}

/// `TASKS` tasks checking random users until told to stop; counts only what completes inside the measured window.
async fn run(setup: &Setup) -> Sample {
    let policy = Policy::from_rate(10, 1.0).expect("a valid policy");
    let stop = Arc::new(AtomicBool::new(false));
    let (decisions, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (store, stop) = (setup.store.clone(), stop.clone());
            let (decisions, errors) = (decisions.clone(), errors.clone());
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(i as u64);
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("user-{}", rng.u64(0..USERS));
                    match store.check(&key, &policy, 1).await {
                        Ok(_) => decisions.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    // The window is wall-clock time by design: this is a throughput measurement, not a wait for a condition.
    tokio::time::sleep(WARMUP).await;
    let (d0, e0, before) = (decisions.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), setup.cpu());
    tokio::time::sleep(MEASURE).await;
    let (d1, e1, after) = (decisions.load(Ordering::Relaxed), errors.load(Ordering::Relaxed), setup.cpu());
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a bench task");
    }
    let seconds = |a: u64, b: u64| b.saturating_sub(a) as f64 / USER_HZ;
    Sample {
        decisions: d1 - d0,
        errors: e1 - e0,
        wall_s: after.at.duration_since(before.at).as_secs_f64(),
        bench_s: seconds(before.bench, after.bench),
        redis_s: before.redis.iter().zip(&after.redis).map(|(&a, &b)| seconds(a, b)).collect(),
        machine_s: seconds(before.machine_busy, after.machine_busy),
        cpu_waited_s: after.cpu_waited_us.saturating_sub(before.cpu_waited_us) as f64 / 1e6,
        reads: after.reads.saturating_sub(before.reads),
    }
}

/// One setup's figures over its rounds: rates, cores each process kept busy, and what limited it.
fn row(setup: &Setup, samples: &[Sample], cpus: usize) -> Value {
    let wall: f64 = samples.iter().map(|s| s.wall_s).sum();
    let decisions: u64 = samples.iter().map(|s| s.decisions).sum();
    let errors: u64 = samples.iter().map(|s| s.errors).sum();
    let bench_cores = samples.iter().map(|s| s.bench_s).sum::<f64>() / wall;
    let redis_cores: Vec<f64> =
        (0..setup.servers.len()).map(|i| samples.iter().map(|s| s.redis_s[i]).sum::<f64>() / wall).collect();
    let redis_total = redis_cores.iter().sum::<f64>();
    let machine_cores = samples.iter().map(|s| s.machine_s).sum::<f64>() / wall;
    // Each decision is one script call, so this is the batch size the client's multiplexed connections achieved
    // (`total_commands_processed` would count the script's own calls too).
    let decisions_per_read = decisions as f64 / samples.iter().map(|s| s.reads).sum::<u64>().max(1) as f64;
    let cpu_pressure = samples.iter().map(|s| s.cpu_waited_s).sum::<f64>() / wall;
    let rate = decisions as f64 / wall;
    let per_decision_us = |cores: f64| cores * 1e6 / rate.max(1.0);
    let servers: Vec<Value> = setup
        .servers
        .iter()
        .zip(&redis_cores)
        .map(|(&(port, _), &cores)| json!({ "port": port, "cores": cores }))
        .collect();
    json!({
        "setup": setup.label, "masters": setup.masters, "decisions_per_s": rate,
        "rounds_per_s": samples.iter().map(|s| s.decisions as f64 / s.wall_s).collect::<Vec<_>>(),
        "errors": errors, "bench_cores": bench_cores, "redis_cores": redis_total, "servers": servers,
        "machine_cores": machine_cores, "decisions_per_read": decisions_per_read, "cpu_pressure": cpu_pressure, "other_cores": (machine_cores - bench_cores - redis_total).max(0.0),
        "bench_us_per_decision": per_decision_us(bench_cores),
        "redis_us_per_decision": per_decision_us(redis_total),
        "limit": limit(&setup.servers, &redis_cores, machine_cores, cpu_pressure, cpus),
    })
}

/// Which resource ran out: one redis-server's thread, the machine's cores (nearly all busy, or tasks waiting for
/// one most of the time; the row's other figures say who used them), or neither.
fn limit(servers: &[(u16, u32)], redis: &[f64], machine: f64, pressure: f64, cpus: usize) -> String {
    let busiest = redis.iter().copied().zip(servers).max_by(|a, b| a.0.total_cmp(&b.0));
    let cpus_text =
        format!("{machine:.2} of {cpus} busy, a task waiting for one {:.0} % of the time", pressure * 100.0);
    match busiest {
        Some((cores, (port, _))) if cores >= SATURATED => {
            format!("the redis-server on port {port} (one thread, {cores:.2} cores busy)")
        }
        _ if machine >= SATURATED * cpus as f64 || pressure >= WAITING => format!("the machine's CPUs ({cpus_text})"),
        _ => format!("neither a redis-server nor the CPUs ({cpus_text}): round trips"),
    }
}

/// `INFO server`'s `process_id` of the redis-server on `port`.
fn pid_of(port: u16) -> u32 {
    info_field(port, "server", "process_id")
}

/// A counter of `INFO stats` of the redis-server on `port` (`total_reads_processed`: socket reads).
fn stat(port: u16, name: &str) -> u64 {
    info_field(port, "stats", name)
}

fn info_field<T: std::str::FromStr>(port: u16, section: &str, name: &str) -> T {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|client| client.get_connection())
        .unwrap_or_else(|e| panic!("connect to {port}: {e}"));
    let info: String = redis::cmd("INFO").arg(section).query(&mut conn).expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in INFO {section} of {port}"))
}

/// utime + stime of a process (all its threads), in ticks; 0 where /proc is missing.
fn process_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after it start with the state (field 3): utime is 14, stime 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(11) + field(12)
}

/// PSI's `some total` of `/proc/pressure/cpu`, in µs; 0 where the kernel does not report it.
fn cpu_waited_us() -> u64 {
    let pressure = std::fs::read_to_string("/proc/pressure/cpu").unwrap_or_default();
    pressure
        .lines()
        .find(|line| line.starts_with("some "))
        .and_then(|line| line.split_whitespace().find_map(|field| field.strip_prefix("total=")))
        .and_then(|total| total.parse().ok())
        .unwrap_or(0)
}

/// Ticks every CPU of the machine spent on anything but idling or waiting for I/O (`/proc/stat`).
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().and_then(|l| l.strip_prefix("cpu ")).unwrap_or("");
    let ticks: Vec<u64> = line.split_whitespace().filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq (steal is the hypervisor's; guest time is already in user).
    ticks.iter().take(7).sum::<u64>() - ticks.get(3).copied().unwrap_or(0) - ticks.get(4).copied().unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
