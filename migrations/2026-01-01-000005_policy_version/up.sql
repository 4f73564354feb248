-- One number that changes whenever any row of `policies` does, so each API process can keep every per-key policy in
-- memory and learn with one cheap read whether its copy is current, instead of a look-up per new key. A trigger
-- keeps it, so hand edits with psql count as well as the service's own writes. Statement-level: one bump per
-- statement (TRUNCATE included), and the bump commits or rolls back with the change it counts.
CREATE TABLE policy_version (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    version BIGINT NOT NULL
);
INSERT INTO policy_version (only_row, version) VALUES (TRUE, 0);

-- The search_path is fixed to the one this migration runs with (the service's schema), so a session with another
-- search_path that edits `policies` still bumps this schema's counter.
CREATE FUNCTION bump_policy_version() RETURNS trigger LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    UPDATE policy_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER policies_bump_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON policies
    FOR EACH STATEMENT EXECUTE FUNCTION bump_policy_version();
