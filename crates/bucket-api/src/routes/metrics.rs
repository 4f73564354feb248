//! `GET /metrics`: the Prometheus scrape endpoint.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::error::ApiError;
use crate::state::AppState;

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain",
            body = String)
    )
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    // The per-node series of `bucket_dependency_up` (Redis Cluster, Sentinel) are probed at scrape time: every
    // node at once, each within the Redis command timeout, so a scrape waits one round trip, not one per node.
    state.store.probe_redis_nodes().await;
    let text = state.metrics.render().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().insert_header((header::CONTENT_TYPE, prometheus::TEXT_FORMAT)).body(text))
}
