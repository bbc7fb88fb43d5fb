-- Example fleet queries on sockmon.events (README, "ClickHouse"). Each works on 18.16.

-- Who connected to 10.2.3.4:5432 yesterday (which process on which host)?
SELECT host, comm, pid, uid, unit, src_ip, src_port, time, error
FROM sockmon.events
WHERE event = 'connect' AND dst_ip = '10.2.3.4' AND dst_port = 5432
  AND time >= toDateTime(yesterday()) AND time < toDateTime(today())
ORDER BY time;

-- Top talkers by unit (successful connects and accepts, last hour).
SELECT host, unit, count() AS connections, uniqExact(dst_ip, dst_port) AS peers
FROM sockmon.events
WHERE event IN ('connect', 'accept') AND error IN ('', 'EINPROGRESS')
  AND time >= now() - 3600
GROUP BY host, unit
ORDER BY connections DESC
LIMIT 20;

-- New listeners today: (host, address, port) listening today but not in the 7 days before.
SELECT host, src_ip, src_port, proto, any(comm) AS comm, any(unit) AS unit, min(time) AS first
FROM sockmon.events
WHERE event = 'listen' AND error = '' AND time >= toDateTime(today())
  AND (host, src_ip, src_port) NOT IN (
      SELECT host, src_ip, src_port FROM sockmon.events
      WHERE event = 'listen' AND time >= toDateTime(today() - 7) AND time < toDateTime(today()))
GROUP BY host, src_ip, src_port, proto
ORDER BY first;

-- Failed connects by destination (today), with the errors seen: a connect's own error,
-- or its outcome (connect_result, with socket hooks).
SELECT dst_ip, dst_port, count() AS failures, groupUniqArray(error) AS errors,
       uniqExact(host) AS hosts
FROM sockmon.events
WHERE event IN ('connect', 'connect_result') AND error NOT IN ('', 'EINPROGRESS')
  AND time >= toDateTime(today())
GROUP BY dst_ip, dst_port
ORDER BY failures DESC
LIMIT 20;
