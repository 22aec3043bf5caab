-- Roles and the application schema.
--
-- Roles are cluster-wide, so they are created only when missing (many databases of one cluster share them).
-- No role gets a password here: operators set passwords outside version control (ALTER ROLE ... PASSWORD).
--   dbops_owner    owns schema app and every object in it; cannot log in.
--   dbops_migrator logs in to run migrations; member of dbops_owner so it can SET ROLE and create owned objects.
--   dbops_app_rw   the application: reads and writes its own tenant's rows (row-level security).
--   dbops_app_ro   reporting and read replicas: reads its own tenant's rows, no password hashes.
--   dbops_auditor  reads the audit trail and the statistics views, no business data.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES ('dbops_owner', false), ('dbops_migrator', true), ('dbops_app_rw', true),
                                   ('dbops_app_ro', true), ('dbops_auditor', true)) AS v(name, login)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r.name) THEN
            EXECUTE format('CREATE ROLE %I %s NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION %s',
                           r.name, CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END,
                           CASE WHEN r.name = 'dbops_migrator' THEN 'NOINHERIT' ELSE 'INHERIT' END);
        END IF;
    END LOOP;
END
$$;

-- The migrator does not inherit the owner's rights: it becomes the owner explicitly (SET ROLE) in each migration.
-- The owner bypasses row-level security: migrations, maintenance and restores (a materialized view refresh runs as
-- the owner) must see every tenant's rows; it cannot log in, so no application connection can use it.
ALTER ROLE dbops_owner BYPASSRLS;
GRANT dbops_owner TO dbops_migrator;
GRANT pg_read_all_stats TO dbops_auditor;

-- Nobody connects or creates objects by default; each role is granted what it needs.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO dbops_migrator, dbops_app_rw, dbops_app_ro, dbops_auditor',
                   current_database());
    EXECUTE format('GRANT CREATE, TEMPORARY ON DATABASE %I TO dbops_owner', current_database());
END
$$;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA IF NOT EXISTS app AUTHORIZATION dbops_owner;
COMMENT ON SCHEMA app IS 'The multi-tenant commerce application: every table carries tenant_id and row-level security.';
REVOKE ALL ON SCHEMA app FROM PUBLIC;
GRANT USAGE ON SCHEMA app TO dbops_app_rw, dbops_app_ro, dbops_auditor;

-- Functions are not executable by PUBLIC unless granted, for everything the owner creates later.
ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
