"""Roles: attributes and memberships, followed transitively (who can become whom, and what that role can do)."""

from __future__ import annotations
