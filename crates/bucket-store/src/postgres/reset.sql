-- Forgets bucket $1: a missing row is a full bucket.
DELETE FROM rate_limits WHERE user_id = $1
