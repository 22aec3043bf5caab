"""The server: pg_hba.conf, TLS, authentication, logging, listen_addresses, extensions, data directory."""

from __future__ import annotations
