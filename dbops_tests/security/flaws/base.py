"""The flaws the first audit rules know (SEC001-SEC034), planted on the reference schema."""

from __future__ import annotations

from dbops.security.catalog import A01, A02, A04, A07, A09
from dbops.security.findings import Severity

C, H, M, L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW

HBA = [
    "local   all  all                      scram-sha-256",
    "host    all  legacy_md5  127.0.0.1/32  password",
    "host    all  all         127.0.0.1/32  md5",
    "host    all  all         ::1/128       trust",
    "hostssl all  all         127.0.0.1/32  scram-sha-256",
]
SETTINGS = {
    "ssl": "on",
    "ssl_min_protocol_version": "TLSv1",
    "password_encryption": "md5",
    "log_connections": "off",
    "log_disconnections": "off",
}
SQL = [
    "CREATE ROLE evil_admin SUPERUSER LOGIN PASSWORD 'Evil-admin-pw-1'",  # SEC001
    "CREATE ROLE nopass LOGIN",  # SEC002
    "SET password_encryption = 'md5'",
    "CREATE ROLE legacy_md5 LOGIN PASSWORD 'Legacy-md5-pw-1'",  # SEC003
    "RESET password_encryption",
    "GRANT CREATE ON SCHEMA public TO PUBLIC",  # SEC009
    "CREATE TABLE app.scratch (id int)",
    "ALTER TABLE app.scratch OWNER TO dbops_app_rw",  # SEC010
    "GRANT CREATE ON SCHEMA app TO dbops_app_rw",  # SEC011
    "GRANT DELETE ON app.payments TO dbops_app_rw",  # SEC012
    "REVOKE SELECT ON app.tenants FROM dbops_app_ro",  # SEC013
    "ALTER TABLE app.products DISABLE ROW LEVEL SECURITY",  # SEC014
    "ALTER TABLE app.inventory NO FORCE ROW LEVEL SECURITY",  # SEC015
    "SET ROLE dbops_owner",
    "CREATE FUNCTION app.unsafe_definer() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT 1::bigint'",  # SEC016
    "RESET ROLE",
    "CREATE FUNCTION public.evil_handler() RETURNS language_handler AS '$libdir/plpgsql', 'plpgsql_call_handler'"
    " LANGUAGE C",
    "CREATE LANGUAGE plevil HANDLER public.evil_handler",  # SEC017
    "CREATE EXTENSION dblink",  # SEC018
    "GRANT pg_execute_server_program TO dbops_app_rw",  # SEC019 critical
    "GRANT pg_read_server_files TO dbops_auditor",  # SEC019 high
    "DROP TRIGGER payments_audit ON app.payments",  # SEC022
    "ALTER TABLE app.users DISABLE TRIGGER users_audit",  # SEC022 (disabled)
]

EXPECTED = {
    ("SEC001", "evil_admin"): (C, A01),
    ("SEC002", "nopass"): (L, A07),
    ("SEC003", "legacy_md5"): (H, A04),
    ("SEC004", "password_encryption"): (H, A04),
    ("SEC005", "pg_hba line 2"): (H, A07),  # password
    ("SEC005", "pg_hba line 3"): (M, A07),  # md5
    ("SEC005", "pg_hba line 4"): (C, A07),  # trust
    ("SEC006", "pg_hba line 2"): (H, A04),
    ("SEC006", "pg_hba line 3"): (H, A04),
    ("SEC006", "pg_hba line 4"): (H, A04),
    ("SEC008", "ssl_min_protocol_version"): (H, A04),
    ("SEC009", "schema public"): (H, A01),
    ("SEC010", "dbops_app_rw: table app.scratch"): (H, A01),
    ("SEC011", "dbops_app_rw: CREATE ON SCHEMA app"): (H, A01),
    ("SEC012", "dbops_app_rw: DELETE on app.payments"): (H, A01),
    ("SEC013", "dbops_app_ro: SELECT on app.tenants"): (L, A01),
    ("SEC014", "app.products"): (H, A01),
    ("SEC015", "app.inventory"): (M, A01),
    ("SEC016", "app.unsafe_definer()"): (H, A01),
    ("SEC017", "language plevil"): (H, A02),
    ("SEC018", "extension dblink"): (M, A02),
    ("SEC019", "dbops_app_rw in pg_execute_server_program"): (C, A01),
    ("SEC019", "dbops_auditor in pg_read_server_files"): (H, A01),
    ("SEC020", "log_connections"): (M, A09),
    ("SEC020", "log_disconnections"): (M, A09),
    ("SEC022", "app.payments"): (H, A09),
    ("SEC022", "app.users"): (H, A09),
    ("SEC031", "backup plain-1"): (H, A04),
    ("SEC032", "backup keyed-1"): (C, A04),  # test_audit.weak_backups' second manifest
    ("SEC033", "backup store"): (C, A04),
}
