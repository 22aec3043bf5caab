-- The telemetry dashboard's read: one device's average over the last day.
\set device random(1, 24)
SELECT avg(value) FROM iot.readings WHERE device_id = :device AND recorded_at > now() - interval '1 day';
