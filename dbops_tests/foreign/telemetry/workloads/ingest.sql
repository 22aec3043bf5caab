-- Ingestion through the SECURITY DEFINER function.
\set device random(1, 24)
SELECT iot.record_reading(:device, 21.5, 40);
