DROP TRIGGER policies_bump_version ON policies;
DROP FUNCTION bump_policy_version();
DROP TABLE policy_version;
