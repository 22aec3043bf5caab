"""Flaws of the objects rules (SEC060-SEC073; see __init__.py for the shape). Every planted object is named obj_*
so no other area's rule meets it."""

from __future__ import annotations

from dbops.security.catalog import A01, A02
from dbops.security.findings import Severity

H, M, L = Severity.HIGH, Severity.MEDIUM, Severity.LOW

HBA: list[str] = []
SETTINGS: dict[str, str] = {}
SQL = [
    # the table: in public, a tenant column, no row-level security and ALL to PUBLIC (SEC014 + SEC060)
    "CREATE TABLE public.obj_tenant_notes (id int, tenant_id bigint, body text)",
    "ALTER TABLE public.obj_tenant_notes FORCE ROW LEVEL SECURITY",  # forced, but not enabled: SEC014 alone
    "GRANT ALL ON public.obj_tenant_notes TO PUBLIC",
    "CREATE SEQUENCE public.obj_open_seq",
    "GRANT USAGE ON SEQUENCE public.obj_open_seq TO PUBLIC",  # SEC060 low
    # SEC061: a partition of a row-level secured table, granted directly; a table keyed by org_id
    "CREATE TABLE public.obj_events (tenant_id bigint NOT NULL, at date NOT NULL) PARTITION BY RANGE (at)",
    "ALTER TABLE public.obj_events ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE public.obj_events FORCE ROW LEVEL SECURITY",
    "CREATE POLICY obj_tenant ON public.obj_events USING (tenant_id = current_setting('app.tenant_id', true)::bigint)",
    "CREATE TABLE public.obj_events_2025 PARTITION OF public.obj_events FOR VALUES FROM ('2025-01-01') TO"
    " ('2026-01-01')",
    "GRANT SELECT ON public.obj_events_2025 TO dbops_app_ro",
    "CREATE TABLE public.obj_org_docs (id int, org_id bigint)",
    "GRANT SELECT ON public.obj_org_docs TO dbops_app_ro",
    # SEC062: row-level security on, but the policy lets every tenant through
    "CREATE TABLE public.obj_tenant_docs (id int, tenant_id bigint)",
    "ALTER TABLE public.obj_tenant_docs ENABLE ROW LEVEL SECURITY",
    "ALTER TABLE public.obj_tenant_docs FORCE ROW LEVEL SECURITY",
    "CREATE POLICY obj_everyone ON public.obj_tenant_docs USING (true)",
    "GRANT SELECT ON public.obj_tenant_docs TO dbops_app_ro",
    # a schema of this area's own
    "CREATE SCHEMA obj_shared",
    "GRANT USAGE ON SCHEMA obj_shared TO PUBLIC",  # SEC073
    "CREATE ROLE obj_stranger NOLOGIN",
    "ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner IN SCHEMA obj_shared GRANT SELECT, INSERT ON TABLES TO PUBLIC",  # 63
    "ALTER DEFAULT PRIVILEGES FOR ROLE dbops_owner IN SCHEMA obj_shared GRANT SELECT ON TABLES TO obj_stranger",  # 64
    # SEC065: a definer resolving through a schema obj_stranger can create in
    "GRANT CREATE ON SCHEMA obj_shared TO obj_stranger",
    "SET ROLE dbops_owner",
    "CREATE FUNCTION app.obj_path_definer() RETURNS int LANGUAGE sql SECURITY DEFINER"
    " SET search_path = obj_shared, pg_temp AS 'SELECT 1'",
    "RESET ROLE",
    # SEC066: a definer owned by the superuser (EXECUTE revoked: only the ownership is the flaw)
    "CREATE FUNCTION public.obj_su_definer() RETURNS int LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS 'SELECT 1'",
    "REVOKE EXECUTE ON FUNCTION public.obj_su_definer() FROM PUBLIC",
    # SEC067: a definer of the BYPASSRLS owner with PostgreSQL's default EXECUTE for PUBLIC
    "CREATE FUNCTION obj_shared.obj_open_definer() RETURNS int LANGUAGE sql SECURITY DEFINER"
    " SET search_path = pg_catalog, pg_temp AS 'SELECT 1'",
    "ALTER FUNCTION obj_shared.obj_open_definer() OWNER TO dbops_owner",
    # SEC068: server file and control functions granted
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_file(text) TO PUBLIC",
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_reload_conf() TO dbops_app_rw",
    # SEC069: the default every new database has, put back
    "GRANT CONNECT, TEMPORARY ON DATABASE ref TO PUBLIC",
    # SEC070: a view over app.users owned by the BYPASSRLS owner, readable by the reporting role
    "CREATE VIEW public.obj_all_users_v AS SELECT id, tenant_id FROM app.users",
    "ALTER VIEW public.obj_all_users_v OWNER TO dbops_owner",
    "GRANT SELECT ON public.obj_all_users_v TO dbops_app_ro",
    # SEC071: a foreign server for everyone, with a password mapped for PUBLIC (dblink_fdw: base installs dblink)
    "CREATE SERVER obj_remote FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host '127.0.0.1', dbname 'ref')",
    "GRANT USAGE ON FOREIGN SERVER obj_remote TO PUBLIC",
    "CREATE USER MAPPING FOR PUBLIC SERVER obj_remote OPTIONS (user 'obj_remote_user', password 'Obj-remote-pw-1')",
    # SEC072: a large object anyone may read and write
    "SELECT lo_create(4242001)",
    "GRANT SELECT, UPDATE ON LARGE OBJECT 4242001 TO PUBLIC",
]

EXPECTED = {
    ("SEC014", "public.obj_tenant_notes"): (H, A01),
    ("SEC060", "PUBLIC on table public.obj_tenant_notes"): (H, A01),
    ("SEC060", "PUBLIC on sequence public.obj_open_seq"): (L, A01),
    ("SEC061", "public.obj_events_2025"): (H, A01),
    ("SEC061", "public.obj_org_docs"): (H, A01),
    ("SEC062", "public.obj_tenant_docs: policy obj_everyone"): (H, A01),
    ("SEC063", "default privileges of dbops_owner in schema obj_shared on tables to PUBLIC"): (H, A01),
    ("SEC064", "default privileges of dbops_owner in schema obj_shared on tables to obj_stranger"): (M, A01),
    ("SEC065", "app.obj_path_definer()"): (H, A01),
    ("SEC066", "public.obj_su_definer()"): (H, A01),
    ("SEC067", "obj_shared.obj_open_definer()"): (H, A01),
    ("SEC068", "PUBLIC: EXECUTE on pg_catalog.pg_read_file(text)"): (H, A01),
    ("SEC068", "dbops_app_rw: EXECUTE on pg_catalog.pg_reload_conf()"): (M, A01),
    ("SEC069", "PUBLIC on the database"): (M, A01),
    ("SEC070", "public.obj_all_users_v"): (H, A01),
    ("SEC071", "foreign server obj_remote"): (M, A02),
    ("SEC071", "user mapping for PUBLIC on server obj_remote"): (H, A02),
    ("SEC072", "large object 4242001"): (H, A01),
    ("SEC073", "schema obj_shared"): (L, A01),
}
