"""dbops' settings: one declarative option table, one loader, typed frozen results.

Sources, lowest first: the defaults of :data:`OPTIONS`, ``dbops.yaml`` (``DBOPS_CONFIG``, else ``./dbops.yaml``
when present), the ``DBOPS_*`` variables. A file's ``targets:`` maps names to databases; with no file there is one
target, ``dbops``, configured by the variables alone. ``docs/configuration.md`` is generated from the table
(``python -m dbops.settings.docs``).
"""

from dbops.settings.load import Problem, SettingsError, check_settings, current_settings, load_settings, option_values
from dbops.settings.model import (
    AlertSettings,
    BackupSettings,
    DagsterSettings,
    HealthSettings,
    LoadTestSettings,
    LogSettings,
    ProfileSettings,
    RehearsalSettings,
    S3Settings,
    ScheduleSettings,
    SecretRef,
    SeedSettings,
    Settings,
    SmtpSettings,
    TargetSettings,
    ValidationSettings,
)
from dbops.settings.options import OPTIONS, Option, checkout_dir

__all__ = [
    "OPTIONS",
    "AlertSettings",
    "HealthSettings",
    "LogSettings",
    "BackupSettings",
    "DagsterSettings",
    "LoadTestSettings",
    "Option",
    "Problem",
    "ProfileSettings",
    "RehearsalSettings",
    "S3Settings",
    "ScheduleSettings",
    "SecretRef",
    "SeedSettings",
    "Settings",
    "SettingsError",
    "SmtpSettings",
    "TargetSettings",
    "ValidationSettings",
    "check_settings",
    "checkout_dir",
    "current_settings",
    "load_settings",
    "option_values",
]
