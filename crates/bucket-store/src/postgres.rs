//! PostgreSQL adapter (being written).
