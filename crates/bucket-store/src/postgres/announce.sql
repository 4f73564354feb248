-- Tells every instance listening on channel $1 that key $2 was reset or its policy changed (postgres/notify.rs).
SELECT pg_notify($1, $2)
