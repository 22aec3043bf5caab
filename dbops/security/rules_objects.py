"""Objects: privileges on every object of every audited schema (public included), default privileges, RLS
coverage of tenant-keyed tables, SECURITY DEFINER hygiene, dangerous functions, database-level PUBLIC privileges."""

from __future__ import annotations
