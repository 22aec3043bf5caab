"""Flaws of the sensitive-data rules (see __init__.py for the shape): a schema ``pii`` the matrix does not govern,
holding customers' e-mail addresses, card numbers (a neutral column name, found by sampling), phone numbers, plain
passwords and AWS keys, readable by the auditor role. The weakened cluster does not preload pgaudit (the fixture
applies settings with a reload, and shared_preload_libraries needs a restart): SEC103 is expected there; the other
pgaudit rules are planted by dbops_tests/security/test_sensitive.py on a server that loads it."""

from __future__ import annotations

from psycopg import sql

from dbops.security.catalog import A01, A04, A09
from dbops.security.findings import Severity

H, M, L = Severity.HIGH, Severity.MEDIUM, Severity.LOW


def luhn_number(seed: int, length: int = 16) -> str:
    """A card-shaped number whose last digit makes the Luhn check pass."""
    body = f"4{seed:0{length - 2}d}"[: length - 1]
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


ROWS = 40
CUSTOMERS = sql.SQL("INSERT INTO pii.customers (email, c1, contact, password, c3) VALUES {}").format(sql.SQL(", ").join(
    sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Literal, (
        f"weak.customer{i}@example.com", luhn_number(9137 * i + 11), f"+49 151 {2000000 + i * 37}",
        f"Summer{2000 + i}!", f"AKIA{(i * 7919) % 10**8:08d}WEAKKEYS"))))
    for i in range(1, ROWS + 1))).as_string(None)

HBA: list[str] = []
SETTINGS: dict[str, str] = {}
SQL: list[str] = [
    "CREATE SCHEMA pii",
    "CREATE TABLE pii.customers (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text, c1 text, contact text,"
    " password text, c3 text)",
    CUSTOMERS,
    "GRANT USAGE ON SCHEMA pii TO dbops_auditor",
    "GRANT SELECT ON pii.customers TO dbops_auditor",  # SEC100: the matrix declares no reader of pii.customers
]
EXPECTED: dict = {
    ("SEC100", "pii.customers"): (H, A01),
    ("SEC101", "pii.customers"): (L, A01),  # found by name and by sampling, not in the matrix's sensitive list
    ("SEC103", "shared_preload_libraries"): (M, A09),
    ("SEC108", "pii.customers.password"): (H, A04),
    ("SEC109", "pii.customers.c3"): (M, A04),
    ("SEC102", "backup plain-1"): (H, A04),  # the weakened store's unencrypted backup (test_audit.weak_backups)
}
