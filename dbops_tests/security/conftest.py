"""Servers for the security tests: Debian's PostgreSQL 15 (built with OpenSSL) with certificates made here, one
hardened and one deliberately weakened, and an embedded PostgreSQL 18 with the reference schema as dbops runs it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from psycopg import sql

from dbops.migrate import Migrator
from dbops.pg.connect import connection, ensure_database
from dbops.pg.server import EmbeddedServer
from dbops_tests.conftest import MIGRATIONS_DIR, make_test_dir, start_test_server, stop_test_server
from dbops_tests.security import flaws

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
REF_DB = "ref"


@dataclass(frozen=True)
class Certificates:
    ca_file: Path
    cert_pem: bytes
    key_pem: bytes


def make_certificates(directory: Path) -> Certificates:
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dbops test CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "root.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Certificates(ca_file, cert.public_bytes(serialization.Encoding.PEM), key_pem)


def write_owned(server: EmbeddedServer, name: str, data: bytes | str) -> None:
    """Write a file into the data directory, owned by the server's OS user, private."""
    path = server.data_dir / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    owner = server.data_dir.stat()
    os.chown(path, owner.st_uid, owner.st_gid)
    path.chmod(0o600)


def configure(server: EmbeddedServer, hba: list[str], settings: dict[str, str], certs: Certificates | None) -> None:
    """Install certificates, a pg_hba.conf and settings (ALTER SYSTEM), then reload."""
    if certs:
        write_owned(server, "server.crt", certs.cert_pem)
        write_owned(server, "server.key", certs.key_pem)
    write_owned(server, "pg_hba.conf", "\n".join(hba) + "\n")
    with connection(server.url()) as conn:
        for name, value in settings.items():
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("SELECT pg_sleep(0.3)")


def migrated(server: EmbeddedServer, database: str = REF_DB) -> str:
    ensure_database(server.url(), database)
    url = server.url(database)
    Migrator(url, MIGRATIONS_DIR).apply()
    return url


@pytest.fixture(scope="session")
def certificates() -> Iterator[Certificates]:
    directory = make_test_dir("certs")
    try:
        yield make_certificates(directory)
    finally:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


HARDENED_HBA = [
    "local   all  all                scram-sha-256",
    "hostssl all  all  127.0.0.1/32  scram-sha-256",
]


@pytest.fixture(scope="session")
def tls_server(certificates: Certificates) -> Iterator[EmbeddedServer]:
    """PostgreSQL 15 accepting TLS only (TLSv1.2+), with the reference schema in database ``ref``."""
    server = start_test_server(PG15_BIN)
    try:
        configure(server, HARDENED_HBA, {"ssl": "on", "ssl_min_protocol_version": "TLSv1.2"}, certificates)
        migrated(server)
        yield server
    finally:
        stop_test_server(server)


@pytest.fixture(scope="session")
def plain_server() -> Iterator[EmbeddedServer]:
    """The embedded PostgreSQL 18 as dbops runs it (loopback, SCRAM, no TLS), with the reference schema."""
    server = start_test_server()
    try:
        migrated(server)
        yield server
    finally:
        stop_test_server(server)


# Every flaw the audit knows, planted on top of the reference schema: each area's file in flaws/ (its pg_hba lines,
# settings, SQL and the findings expected of them), combined in the order of flaws.AREAS.
WEAK_HBA, WEAK_SETTINGS, WEAKENING_SQL = flaws.combined()
REFERENCE_LOGIN_ROLES = ["dbops_migrator", "dbops_app_rw", "dbops_app_ro", "dbops_auditor"]


def start_weak_server(certificates: Certificates) -> EmbeddedServer:
    """PostgreSQL 15 with the reference schema in ``ref`` and every flaw of WEAKENING_SQL/WEAK_HBA planted."""
    server = start_test_server(PG15_BIN)
    try:
        url = migrated(server)
        with connection(url) as conn:
            for role in REFERENCE_LOGIN_ROLES:  # a careful operator set these; the planted flaws are the only ones
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role),
                                                                        sql.Literal(f"{role}-Pw-123")))
            for statement in WEAKENING_SQL:
                conn.execute(statement)
        configure(server, WEAK_HBA, WEAK_SETTINGS, certificates)
    except BaseException:
        stop_test_server(server)
        raise
    return server


@pytest.fixture(scope="session")
def weak_server(certificates: Certificates) -> Iterator[EmbeddedServer]:
    """The weakened cluster, shared by the tests that only read it."""
    server = start_weak_server(certificates)
    try:
        yield server
    finally:
        stop_test_server(server)


@pytest.fixture
def weak_server_to_harden(certificates: Certificates) -> Iterator[EmbeddedServer]:
    """A weakened cluster of its own, for a test that changes it."""
    server = start_weak_server(certificates)
    try:
        yield server
    finally:
        stop_test_server(server)
