DROP FUNCTION bucket_elapsed_us(timestamptz, timestamptz);
DROP FUNCTION bucket_clock(bigint);
DROP FUNCTION bucket_us(timestamptz);
