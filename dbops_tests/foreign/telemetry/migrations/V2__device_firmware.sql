ALTER TABLE iot.devices ADD COLUMN firmware text;
CREATE INDEX devices_site_idx ON iot.devices (site_code);
