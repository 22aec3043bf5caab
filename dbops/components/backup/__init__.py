"""Dagster group ``backup``: one target's logical and base backups, the WAL archive and retention (the drill is
group ``restore``). Their schedules are built with every step's in ``dbops/components/schedules.py``."""

from dbops.components.backup.assets import build

__all__ = ["build"]
