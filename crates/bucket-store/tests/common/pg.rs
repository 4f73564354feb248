//! Moved to `bucket_testkit::pg`; re-exported for test files not yet switched over.
#![allow(unused_imports)]

pub use bucket_testkit::pg::*;
