//! Probes: `/healthz` says the process answers, `/readyz` that its stores do.

use actix_web::{web, HttpResponse};
use bucket_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::state::AppState;

/// Body of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`: answering at all is the signal.
    #[schema(example = "ok")]
    pub status: String,
}

/// One dependency in `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Dependency {
    /// `memory`, `redis` or `postgres`.
    #[schema(example = "memory")]
    pub name: String,
    /// Whether it answered.
    pub up: bool,
    /// What it said, or why it is down.
    #[schema(example = "0 buckets")]
    pub detail: String,
    /// Each server behind it, when it is several: Redis Cluster nodes, or a Sentinel group's master, replicas and
    /// sentinels (absent for one server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
}

/// One server behind a dependency in `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// `host:port`, as the cluster or the sentinels name it.
    #[schema(example = "10.0.0.5:6379")]
    pub addr: String,
    /// `master`, `replica` or `sentinel`.
    #[schema(example = "master")]
    pub role: String,
    /// Whether it answered just now (a replica of a Sentinel group: whether the sentinels see it up).
    pub up: bool,
    /// What it answered, or why it counts as down.
    #[schema(example = "PONG; owns slots")]
    pub detail: String,
}

/// Body of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` when every dependency is up, `degraded` when some are down but decisions are still made (the tiered
    /// store with Redis or PostgreSQL down), `not_ready` when none answers.
    #[schema(example = "ready")]
    pub status: String,
    /// Each dependency's state.
    pub dependencies: Vec<Dependency>,
    /// The gateway front's limits, when a limits file is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsState>,
}

/// The live limits in `/readyz`: a rejected reload does not make the instance unready (the last good limits keep
/// deciding) but is shown here until a good one replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LimitsState {
    /// Rules in the live configuration.
    pub rules: usize,
    /// Why the last reload was rejected, if it was.
    #[schema(example = json!(null))]
    pub last_error: Option<String>,
}

/// Liveness
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process answers", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok".into() })
}

/// Readiness
///
/// 200 while decisions can be made: every dependency up (`ready`) or at least one (`degraded`: the tiered store
/// falls back to the other tier, and pulling the instance out of a load balancer would make things worse). 503
/// when no dependency answers; both list each dependency. Redis in cluster mode is up while every slot is served
/// (`cluster_state:ok` and every master owning slots answers), in sentinel mode while the master answers; its
/// `nodes` list each server with its role.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Decisions can be made (ready or degraded)", body = Readiness),
        (status = 503, description = "No dependency answers", body = Readiness),
    )
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let dependencies: Vec<Dependency> = state
        .store
        .health()
        .await
        .into_iter()
        .map(|d| Dependency {
            name: d.name.into(),
            up: d.up,
            detail: d.detail,
            nodes: d
                .nodes
                .into_iter()
                .map(|n| Node { addr: n.addr, role: n.role.as_str().into(), up: n.up, detail: n.detail })
                .collect(),
        })
        .collect();
    let up = dependencies.iter().filter(|d| d.up).count();
    let status = match up {
        0 => "not_ready",
        n if n == dependencies.len() => "ready",
        _ => "degraded",
    };
    let limits = state
        .limits
        .as_ref()
        .map(|live| LimitsState { rules: live.current().rule_count(), last_error: live.last_error() });
    let body = Readiness { status: status.into(), dependencies, limits };
    if up > 0 {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
