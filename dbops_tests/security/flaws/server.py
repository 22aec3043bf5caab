"""Flaws of the server rules (SEC080-SEC099; see __init__.py for the shape).

Settings that only apply at a restart (listen_addresses, superuser_reserved_connections) are planted with ALTER
SYSTEM like the rest: the rules read the value waiting in postgresql.auto.conf. File modes are planted by the server
itself (COPY ... TO PROGRAM runs as its OS user). A finding names its pg_hba line by number, so ``EXPECTED`` is worked
out when read, after the areas before this one have added their lines.
"""

from __future__ import annotations

from typing import Any

from dbops.security.catalog import A01, A02, A03, A04, A07, A08, A09
from dbops.security.findings import Severity
from dbops_tests.security import flaws as _flaws

H, M, L = Severity.HIGH, Severity.MEDIUM, Severity.LOW

HBA = [
    "hostssl all           all             0.0.0.0/0        scram-sha-256",  # SEC081 high: the whole internet
    "hostssl all           all             10.20.0.0/16     scram-sha-256",  # SEC080: every role, every database
    "hostssl all           srv_wide_net    10.0.0.0/8       scram-sha-256",  # SEC081 medium: 16 million addresses
    "hostssl srv_ident_db  srv_ident_user  192.168.50.0/24  ident",          # SEC082
]
SETTINGS = {
    "ssl_ciphers": "ALL:!eNULL",  # SEC083 high: anonymous suites
    "ssl_prefer_server_ciphers": "off",  # SEC083 low
    "log_min_error_statement": "panic",  # SEC084
    "log_min_messages": "fatal",  # SEC085
    "log_error_verbosity": "terse",  # SEC086
    "log_statement": "none",  # SEC087
    "log_line_prefix": "%t ",  # SEC088 medium: no user, database, process, application or client
    "log_lock_waits": "off",  # SEC089
    "log_destination": "stderr,csvlog",  # SEC090 medium: csvlog without the collector
    "log_file_mode": "0644",  # SEC091
    "listen_addresses": "*",  # SEC092 (pending a restart)
    "fsync": "off",  # SEC094 (also every test server's setting)
    "full_page_writes": "off",  # SEC094
    "zero_damaged_pages": "on",  # SEC095
    "allow_system_table_mods": "on",  # SEC095
    "dynamic_library_path": "/var/lib/dbops-srv-libs:$libdir",  # SEC096
    "superuser_reserved_connections": "0",  # SEC099 (pending a restart)
}
SQL = [
    "CREATE EXTENSION amcheck VERSION '1.0'",  # SEC093
    # SEC097: the data directory opened to every OS user (PostgreSQL checks it at start only)
    "DO $$ BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L',"
    " 'chmod 0755 ' || current_setting('data_directory')); END $$",
    # SEC098: the socket (0777, PostgreSQL's default) made reachable: its directory and the one above traversable
    "DO $$ BEGIN EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'chmod 0711 '"
    " || regexp_replace(current_setting('data_directory'), '/[^/]+$', '') || ' '"
    " || current_setting('unix_socket_directories')); END $$",
]


def hba_line(index: int) -> str:
    """The subject of this area's ``index``-th pg_hba line (1-based) once the areas before it added theirs."""
    before = 0
    for area in _flaws.AREAS:
        if area.__name__ == __name__:
            break
        before += len(getattr(area, "HBA", []))
    return f"pg_hba line {before + index}"


def expected() -> dict[tuple[str, str], tuple[Severity, str]]:
    return {
        ("SEC081", hba_line(1)): (H, A02),
        ("SEC080", hba_line(2)): (M, A01),
        ("SEC081", hba_line(3)): (M, A02),
        ("SEC082", hba_line(4)): (H, A07),
        ("SEC083", "ssl_ciphers"): (H, A04),
        ("SEC083", "ssl_prefer_server_ciphers"): (L, A04),
        ("SEC084", "log_min_error_statement"): (M, A09),
        ("SEC085", "log_min_messages"): (M, A09),
        ("SEC086", "log_error_verbosity"): (L, A09),
        ("SEC087", "log_statement"): (M, A09),
        ("SEC088", "log_line_prefix"): (M, A09),
        ("SEC089", "log_lock_waits"): (L, A09),
        ("SEC090", "logging_collector"): (M, A09),
        ("SEC091", "log_file_mode"): (M, A09),
        ("SEC092", "listen_addresses"): (L, A02),
        ("SEC093", "extension amcheck"): (L, A03),
        ("SEC094", "fsync"): (M, A08),
        ("SEC094", "full_page_writes"): (M, A08),
        ("SEC095", "zero_damaged_pages"): (H, A08),
        ("SEC095", "allow_system_table_mods"): (H, A08),
        ("SEC096", "dynamic_library_path"): (M, A08),
        ("SEC097", "data directory"): (M, A01),
        ("SEC098", "unix_socket_permissions"): (L, A01),
        ("SEC099", "superuser_reserved_connections"): (L, A02),
    }


def __getattr__(name: str) -> Any:
    if name == "EXPECTED":  # read by flaws.expected(), after every area is loaded
        return expected()
    raise AttributeError(name)
