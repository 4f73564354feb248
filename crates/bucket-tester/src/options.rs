//! What one run is asked to do, independent of how it was asked (the CLI in `main.rs`, or a test in-process).

use std::time::Duration;

use crate::grpc::GrpcTarget;
use crate::scenarios::ScenarioName;

/// Everything `run` needs to know; `Default` is the CLI's defaults with output silenced for embedding.
#[derive(Debug, Clone)]
pub struct Options {
    /// Base URL of the server; the tester sends `GET` to it with the user header (or, with `grpc`, the URL of its
    /// gRPC rate limit service).
    pub target: String,
    /// Ask Envoy's `ShouldRateLimit` over gRPC at `target` and `instances`, with this domain and these descriptors.
    pub grpc: Option<GrpcTarget>,
    /// API instances sharing one store; `concurrent` spreads its requests over them round-robin.
    pub instances: Vec<String>,
    /// Scenarios to run (in their canonical order whatever the order given); empty means all.
    pub scenarios: Vec<ScenarioName>,
    /// Print only the JSON report on stdout.
    pub json: bool,
    /// No per-request lines.
    pub quiet: bool,
    /// Draw a spinner on stderr while waiting (the CLI enables it only on a terminal).
    pub progress: bool,
    /// Header naming the caller.
    pub user_header: String,
    /// Bound on each request, connection included.
    pub timeout: Duration,
    /// Requests fired at once by `concurrent`; `None` means four times the capacity, at most 1000.
    pub concurrency: Option<usize>,
    /// Requests `drip` sends after draining; `None` means capacity + 3.
    pub drip_requests: Option<u64>,
    /// Make `cache-vs-db` fail, not skip, against a server whose store is not tiered.
    pub require_tiered: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: "http://localhost:8080".into(),
            grpc: None,
            instances: Vec::new(),
            scenarios: Vec::new(),
            json: false,
            quiet: true,
            progress: false,
            user_header: "X-User-ID".into(),
            timeout: Duration::from_secs(5),
            concurrency: None,
            drip_requests: None,
            require_tiered: false,
        }
    }
}

impl Options {
    /// What a scenario finding users sharing a bucket suggests checking.
    pub fn user_hint(&self) -> String {
        match &self.grpc {
            Some(_) => "do the rules give each value of the user's descriptor entry its own bucket?".into(),
            None => format!("does the server read {}?", self.user_header),
        }
    }

    /// The scenarios to run, deduplicated, in canonical order (cheap ones first, the slow drip near the end).
    pub fn selected(&self) -> Vec<ScenarioName> {
        if self.scenarios.is_empty() {
            return ScenarioName::ALL.to_vec();
        }
        ScenarioName::ALL.into_iter().filter(|s| self.scenarios.contains(s)).collect()
    }
}
