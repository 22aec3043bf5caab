"""Dagster group ``security``: ``<target>/security_audit`` with checks ``no_critical_findings`` (ERROR) and
``no_high_findings`` (WARN). Needs the resources ``database`` and ``security`` (SecurityResource)."""

import dagster as dg

from dbops.components.security.assets import build_security_audit


def build(target: str) -> dg.Definitions:
    return dg.Definitions(assets=[build_security_audit(target)])
