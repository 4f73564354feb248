-- The counter every policy write moves, so a cache checks one row instead of reloading every policy.
SELECT version FROM policy_version
