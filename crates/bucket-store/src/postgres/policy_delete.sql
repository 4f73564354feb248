-- Removes the per-key policy of $1 (a trigger from the migrations bumps policy_version).
DELETE FROM policies WHERE key = $1
