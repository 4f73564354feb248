-- The statements this session has prepared and how often each ran (a diagnostic, and the proof in
-- tests/prepared.rs that checks reuse their statements). Every execution uses either a generic or a custom plan;
-- a custom plan means the statement was planned again for that execution (the pool forces generic plans).
SELECT statement AS sql, (generic_plans + custom_plans)::bigint AS executions, custom_plans::bigint AS custom_plans
FROM pg_prepared_statements
ORDER BY prepare_time, name
