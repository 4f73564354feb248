//! How requests reach the server: HTTP `GET` with the user header, or gRPC `ShouldRateLimit` with the user in a
//! descriptor. The scenarios see only [`Reply`]s, so each is written once for both.

use crate::client::{Client, Reply, RequestError};
use crate::grpc::GrpcClient;

/// The client a run uses.
pub enum Transport {
    /// `--target`: a decision route or a proxy in front of one.
    Http(Client),
    /// `--grpc`: Envoy's rate limit service.
    Grpc(GrpcClient),
}

impl Transport {
    /// One decision at `url` (the target or an instance) for `user`.
    pub async fn hit(&self, url: &str, user: &str) -> Result<Reply, RequestError> {
        match self {
            Transport::Http(client) => client.hit(url, user).await,
            Transport::Grpc(client) => client.hit(url, user).await,
        }
    }

    /// The store's parts as `/readyz` lists them; `None` over gRPC, whose answers don't name a store.
    pub async fn dependencies(&self, url: &str) -> Option<Vec<String>> {
        match self {
            Transport::Http(client) => client.dependencies(url).await,
            Transport::Grpc(_) => None,
        }
    }

    /// Whether requests go over gRPC.
    pub fn is_grpc(&self) -> bool {
        matches!(self, Transport::Grpc(_))
    }
}
