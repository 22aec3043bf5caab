"""Sensitive data: columns holding e-mail addresses, phone numbers, card numbers, national identifiers, password hashes
and secrets, found by name and by bounded sampling; who can read them, whether backups of them are encrypted and
whether access to them is logged (pgaudit)."""

from __future__ import annotations
