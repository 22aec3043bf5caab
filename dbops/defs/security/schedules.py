"""The audit runs daily: a grant made by hand or a setting changed in a hurry shows up the next morning."""

import dagster as dg

security_audit_daily = dg.ScheduleDefinition(
    name="security_audit_daily",
    target=dg.AssetSelection.assets("security_audit"),
    cron_schedule="15 5 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Runs the security audit every morning (off by default; turn it on in the UI).",
)
