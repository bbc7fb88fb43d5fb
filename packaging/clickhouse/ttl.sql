-- Keep 30 days of sockmon events (ClickHouse 19.6 and later; 18.16 has no TTL:
-- drop old daily partitions instead, e.g. ALTER TABLE sockmon.events DROP PARTITION 20260101).
ALTER TABLE sockmon.events MODIFY TTL time + INTERVAL 30 DAY;
