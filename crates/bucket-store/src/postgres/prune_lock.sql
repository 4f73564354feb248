-- The pruner's turn (postgres/prune.rs): true for the one session that holds it until its transaction ends. One
-- lock per schema, so stores on different schemas of one database prune side by side.
SELECT pg_try_advisory_xact_lock(hashtext('bucket-prune:' || current_schema())) AS held
