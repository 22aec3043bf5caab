-- A sensor-telemetry database: schema `iot` plus `public`, daily partitions on a timestamptz, a foreign key from and
-- one onto the partitioned table, an exclusion constraint, and roles of its own. No migration history.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telemetry_ingest') THEN
        CREATE ROLE telemetry_ingest LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'telemetry_viewer') THEN
        CREATE ROLE telemetry_viewer NOLOGIN;
    END IF;
END $$;

CREATE SCHEMA iot;
CREATE TYPE iot.device_kind AS ENUM ('thermometer', 'hygrometer', 'meter');
CREATE DOMAIN iot.percent AS numeric(5, 2) CHECK (VALUE BETWEEN 0 AND 100);

CREATE TABLE public.sites (
    code text PRIMARY KEY,
    name text NOT NULL,
    timezone text NOT NULL DEFAULT 'UTC'
);

CREATE TABLE public.site_outages (
    id serial PRIMARY KEY,
    site_code text NOT NULL REFERENCES public.sites (code),
    during tstzrange NOT NULL,
    EXCLUDE USING gist (during WITH &&)
);

CREATE TABLE iot.devices (
    id integer PRIMARY KEY,
    site_code text NOT NULL REFERENCES public.sites (code),
    kind iot.device_kind NOT NULL,
    serial text NOT NULL UNIQUE,
    battery iot.percent,
    last_seen timestamptz
);
ALTER TABLE iot.devices ADD CONSTRAINT devices_serial_format CHECK (serial ~ '^[A-Z]{2}-[0-9]+$') NOT VALID;

-- Daily partitions from 40 days ago to a week ahead; a foreign key from the partitioned table to devices.
CREATE TABLE iot.readings (
    device_id integer NOT NULL REFERENCES iot.devices (id),
    recorded_at timestamptz NOT NULL,
    value double precision NOT NULL,
    humidity iot.percent,
    PRIMARY KEY (device_id, recorded_at)
) PARTITION BY RANGE (recorded_at);

DO $$
DECLARE
    day date;
BEGIN
    FOR day IN SELECT generate_series(current_date - 40, current_date + 7, interval '1 day')::date LOOP
        EXECUTE format('CREATE TABLE iot.readings_%s PARTITION OF iot.readings FOR VALUES FROM (%L) TO (%L)',
                       to_char(day, 'YYYYMMDD'), day::timestamptz, (day + 1)::timestamptz);
    END LOOP;
END $$;

-- A foreign key onto the partitioned table.
CREATE TABLE iot.alarms (
    id bigserial PRIMARY KEY,
    device_id integer NOT NULL,
    recorded_at timestamptz NOT NULL,
    severity smallint NOT NULL CHECK (severity BETWEEN 1 AND 5),
    FOREIGN KEY (device_id, recorded_at) REFERENCES iot.readings (device_id, recorded_at) ON DELETE CASCADE
);

CREATE FUNCTION iot.bump_last_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE iot.devices d SET last_seen = greatest(d.last_seen, n.latest)
    FROM (SELECT device_id, max(recorded_at) AS latest FROM new_rows GROUP BY device_id) AS n
    WHERE d.id = n.device_id;
    RETURN NULL;
END $$;
CREATE TRIGGER readings_last_seen AFTER INSERT ON iot.readings
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION iot.bump_last_seen();

-- SECURITY DEFINER ingestion that names its tables and helper without a schema.
CREATE FUNCTION iot.clamp_percent(v numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT least(100, greatest(0, v))
$$;
CREATE FUNCTION iot.record_reading(p_device integer, p_value double precision, p_humidity numeric)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO readings (device_id, recorded_at, value, humidity)
    VALUES (p_device, now(), p_value, clamp_percent(p_humidity));
END $$;
ALTER FUNCTION iot.record_reading(integer, double precision, numeric) SET search_path = iot, public;

GRANT USAGE ON SCHEMA iot TO telemetry_ingest, telemetry_viewer;
GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA iot TO telemetry_ingest;
GRANT SELECT ON ALL TABLES IN SCHEMA iot TO telemetry_viewer;
GRANT SELECT ON public.sites TO telemetry_viewer;
GRANT EXECUTE ON FUNCTION iot.record_reading(integer, double precision, numeric) TO telemetry_ingest;

-- Seed data: 4 sites, 24 devices, a reading every two hours for 35 days (about 10,000 rows), a few alarms.
INSERT INTO public.sites (code, name) SELECT 'S' || i, 'Site ' || i FROM generate_series(1, 4) AS i;
INSERT INTO public.site_outages (site_code, during)
SELECT 'S' || i, tstzrange(current_date - 10 * i, current_date - 10 * i + 1) FROM generate_series(1, 3) AS i;
INSERT INTO iot.devices (id, site_code, kind, serial, battery)
SELECT i, 'S' || (1 + i % 4), (ARRAY['thermometer', 'hygrometer', 'meter'])[1 + i % 3]::iot.device_kind,
       'DV-' || (1000 + i), 50 + i
FROM generate_series(1, 24) AS i;
INSERT INTO iot.readings (device_id, recorded_at, value, humidity)
SELECT d, t, 20 + (d % 7) + extract(hour FROM t) / 10.0, 40 + d % 30
FROM generate_series(1, 24) AS d
CROSS JOIN generate_series(current_date - 35, current_date - interval '1 hour', interval '2 hours') AS t;
INSERT INTO iot.alarms (device_id, recorded_at, severity)
SELECT device_id, recorded_at, 1 + (device_id % 5) FROM iot.readings WHERE extract(hour FROM recorded_at) = 12
  AND device_id % 6 = 0;
ANALYZE;
