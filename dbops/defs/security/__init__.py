"""Dagster group ``security``: ``security_audit`` with checks ``no_critical_findings`` (ERROR) and
``no_high_findings`` (WARN). Needs the resources ``database`` and ``security`` (SecurityResource)."""

import dagster as dg

from dbops.defs.security.assets import security_audit
from dbops.defs.security.schedules import security_audit_daily

defs = dg.Definitions(assets=[security_audit], schedules=[security_audit_daily])
