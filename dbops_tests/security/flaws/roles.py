"""Flaws of the roles rules (SEC050-SEC059, see __init__.py for the shape): role attributes and memberships followed
transitively. Every planted role is named rl_*, every login role has a password (else SEC002 would report it)."""

from __future__ import annotations

from dbops.security.catalog import A01
from dbops.security.findings import Severity

C, H, M, L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW

HBA: list[str] = []
SETTINGS: dict[str, str] = {}
SQL = [
    # an application of its own: rl_owner (NOLOGIN) owns schema rl_zone and its table, rl_app reads it
    "CREATE ROLE rl_owner NOLOGIN",
    "CREATE SCHEMA rl_zone AUTHORIZATION rl_owner",
    "CREATE TABLE rl_zone.rl_ledger (id int PRIMARY KEY, note text)",
    "ALTER TABLE rl_zone.rl_ledger OWNER TO rl_owner",
    "CREATE ROLE rl_app LOGIN PASSWORD 'Rl-app-Pw-501'",
    "GRANT USAGE ON SCHEMA rl_zone TO rl_app",
    "GRANT SELECT ON rl_zone.rl_ledger TO rl_app",
    "GRANT rl_owner TO rl_app",  # SEC050: the application role can become (and inherits) the owner
    "CREATE ROLE rl_rolemaker LOGIN PASSWORD 'Rl-rolemaker-Pw-511' CREATEROLE",  # SEC051 (critical on 15)
    "CREATE ROLE rl_dbmaker LOGIN PASSWORD 'Rl-dbmaker-Pw-521' CREATEDB",  # SEC052
    "CREATE ROLE rl_rls_skipper LOGIN PASSWORD 'Rl-skipper-Pw-531' BYPASSRLS",  # SEC053
    "GRANT rl_rls_skipper TO rl_app",  # SEC059: ... and can SET ROLE to a BYPASSRLS role
    "CREATE ROLE rl_replicator LOGIN PASSWORD 'Rl-replicator-Pw-541' REPLICATION",
    "GRANT SELECT ON rl_zone.rl_ledger TO rl_replicator",  # SEC054 high: replication and data access in one role
    "CREATE ROLE rl_standby LOGIN PASSWORD 'Rl-standby-Pw-542' REPLICATION",  # SEC054 medium: not in the matrix
    "CREATE ROLE rl_scribe LOGIN PASSWORD 'Rl-scribe-Pw-551'",
    "GRANT pg_write_all_data TO rl_scribe",  # SEC055 high
    "CREATE ROLE rl_signalers NOLOGIN",
    "GRANT pg_signal_backend TO rl_signalers",  # SEC055 medium, reached by rl_ops through the group
    "CREATE ROLE rl_ops LOGIN PASSWORD 'Rl-ops-Pw-552'",
    "GRANT rl_signalers TO rl_ops",
    "CREATE ROLE rl_root NOLOGIN SUPERUSER",  # SEC001
    "CREATE ROLE rl_breakglass LOGIN PASSWORD 'Rl-breakglass-Pw-561'",
    "GRANT rl_root TO rl_breakglass",  # SEC056
    "CREATE ROLE rl_team NOLOGIN",
    "CREATE ROLE rl_lead LOGIN PASSWORD 'Rl-lead-Pw-571'",
    "GRANT rl_team TO rl_lead WITH ADMIN OPTION",  # SEC057
    "CREATE ROLE rl_report LOGIN PASSWORD 'Rl-report-Pw-581'",
    "CREATE ROLE rl_writer LOGIN PASSWORD 'Rl-writer-Pw-582'",
    "GRANT rl_writer TO rl_report",  # SEC058
]

EXPECTED = {
    ("SEC001", "rl_root"): (C, A01),
    ("SEC050", "rl_app can become rl_owner"): (C, A01),
    ("SEC051", "rl_rolemaker: CREATEROLE"): (C, A01),
    ("SEC052", "rl_dbmaker: CREATEDB"): (M, A01),
    ("SEC053", "rl_rls_skipper: BYPASSRLS"): (H, A01),
    ("SEC054", "rl_replicator: REPLICATION"): (H, A01),
    ("SEC054", "rl_standby: REPLICATION"): (M, A01),
    ("SEC055", "rl_scribe in pg_write_all_data"): (H, A01),
    ("SEC055", "rl_signalers in pg_signal_backend"): (M, A01),
    ("SEC056", "rl_breakglass can become rl_root"): (C, A01),
    ("SEC057", "rl_lead: ADMIN OPTION on rl_team"): (M, A01),
    ("SEC058", "rl_report can become rl_writer"): (M, A01),
    ("SEC059", "rl_app can become rl_rls_skipper"): (H, A01),
}
