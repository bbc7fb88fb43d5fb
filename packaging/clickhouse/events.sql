-- sockmon's events table for ClickHouse: one row per socket event, from every
-- host of a fleet (the `host` column), written by the daemon's ClickHouse sink
-- ([sinks.clickhouse] in /etc/sockmon/config.toml) as INSERT ... FORMAT JSONEachRow.
--
-- The types work on ClickHouse 18.16 (Debian's clickhouse-server) and on current
-- releases: there is no DateTime64 there, so the time is `time` (DateTime, whole
-- seconds, UTC) plus `time_ns` (nanoseconds within that second); no LowCardinality,
-- no IPv4/IPv6 domain types (addresses are text, as in the JSON stream).
--
-- ORDER BY (event, dst_ip, dst_port, time): the fleet's questions name an event
-- kind and usually a destination ("who connected to 10.2.3.4:5432", "failed
-- connects by destination", "new listeners"); a range on the sort key prefix
-- reads only those granules. Daily partitions let old data be dropped cheaply
-- (ALTER TABLE sockmon.events DROP PARTITION 20260101) where TTL is missing.
--
-- Apply: clickhouse-client --multiquery < events.sql
--    or: curl 'http://HOST:8123/' --data-binary @events.sql   (one statement per request)
-- TTL (ClickHouse 19.6 and later): see ttl.sql.

-- `event` is a String, not an Enum: a newer daemon may report new kinds (connect_result),
-- and an Enum would make the server refuse every batch holding one.

CREATE DATABASE IF NOT EXISTS sockmon;

CREATE TABLE IF NOT EXISTS sockmon.events
(
    time         DateTime,
    time_ns      UInt32,
    host         String,
    event        String,
    proto        Enum8('tcp' = 6, 'udp' = 17),
    family       Enum8('ipv4' = 4, 'ipv6' = 6),
    src_ip       String,
    src_port     UInt16,
    dst_ip       String,
    dst_port     UInt16,
    pid          UInt32,
    tid          UInt32,
    uid          UInt32,
    comm         String,
    process_comm String,
    netns        UInt32,
    inode        UInt64,
    cgroup_id    UInt64,
    unit         String,
    error        String,
    implicit     UInt8
)
ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(time)
ORDER BY (event, dst_ip, dst_port, time);
