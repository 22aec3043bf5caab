-- Ingestion: one reading per transaction (a repeated device and instant is skipped, as the ingest service does).
\set device random(1, 24)
INSERT INTO iot.readings (device_id, recorded_at, value, humidity)
VALUES (:device, clock_timestamp(), 21.5, 40) ON CONFLICT DO NOTHING;
