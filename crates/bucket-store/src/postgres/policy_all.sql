-- Every per-key policy, for the in-process snapshot.
SELECT key, capacity, interval_us FROM policies
