-- The per-key policy of $1, if an operator set one.
SELECT capacity, interval_us FROM policies WHERE key = $1
