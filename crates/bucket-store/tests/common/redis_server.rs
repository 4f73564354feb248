//! Moved to `bucket_testkit::redis_server`; re-exported for test files not yet switched over.
#![allow(unused_imports)]

pub use bucket_testkit::free_port;
pub use bucket_testkit::redis_server::*;
