DROP FUNCTION bucket_prunable_at(timestamptz);
