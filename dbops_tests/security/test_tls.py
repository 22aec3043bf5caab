"""Encryption in transit on a real OpenSSL-built server: dbops connects with sslmode=verify-full, plain TCP is refused,
and the audit states the TLS situation of each server as it is."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from dbops.errors import ConnectionFailed
from dbops.pg.connect import connection
from dbops.pg.server import EmbeddedServer
from dbops.security import audit_database
from dbops_tests.conftest import PROJECT_DIR
from dbops_tests.security.conftest import REF_DB, Certificates, make_certificates

MATRIX = PROJECT_DIR / "sql" / "access-control.yml"


def tls_url(server: EmbeddedServer, ca_file: Path, host: str = "127.0.0.1", mode: str = "verify-full") -> str:
    url = server.url(REF_DB).replace("@127.0.0.1:", f"@{host}:")
    return f"{url}?sslmode={mode}&sslrootcert={quote(str(ca_file))}"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_dbops_connects_with_verify_full(tls_server: EmbeddedServer, certificates: Certificates, host: str) -> None:
    with connection(tls_url(tls_server, certificates.ca_file, host)) as conn:
        ssl, version = conn.execute("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert ssl is True and version in ("TLSv1.2", "TLSv1.3")


def test_wrong_root_certificate_and_plain_tcp_are_refused(tls_server: EmbeddedServer, certificates: Certificates,
                                                          tmp_path: Path) -> None:
    other_ca = make_certificates(tmp_path).ca_file  # a CA that did not sign the server's certificate
    with pytest.raises(ConnectionFailed, match="SSL error") as failure:
        connection(tls_url(tls_server, other_ca)).__enter__()
    assert tls_server.password not in str(failure.value)
    with pytest.raises(ConnectionFailed, match="no encryption") as failure:
        connection(tls_url(tls_server, certificates.ca_file, mode="disable")).__enter__()
    assert tls_server.password not in str(failure.value) and "***" in str(failure.value)


def test_audit_reports_tls_state_of_both_servers(tls_server: EmbeddedServer, plain_server: EmbeddedServer,
                                                 certificates: Certificates) -> None:
    secured = audit_database(tls_url(tls_server, certificates.ca_file), MATRIX, check_backups=False)
    assert secured.tls["ssl"] == "on" and secured.tls["ssl_min_protocol_version"] == "TLSv1.2"
    assert secured.tls["connection_encrypted"] and secured.tls["tls_required"]
    assert not {f.rule for f in secured.findings} & {"SEC006", "SEC007", "SEC008"}
    plain = audit_database(plain_server.url(REF_DB), MATRIX, check_backups=False)
    assert plain.tls["ssl"] == "off" and not plain.tls["connection_encrypted"] and not plain.tls["tls_required"]
    assert [f.rule for f in plain.findings if f.rule.startswith(("SEC006", "SEC007", "SEC008"))] == ["SEC007"]
