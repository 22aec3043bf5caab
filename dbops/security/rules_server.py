"""The server: pg_hba.conf, TLS, authentication, logging, listen_addresses, extensions, data directory.

Settings that only take effect at a restart (listen_addresses, logging_collector, unix_socket_permissions,
superuser_reserved_connections) are judged on the value running now and on the one the configuration files hold for
the next start (``pg_file_settings``, superusers only): a weak value waiting for a restart is reported before it
takes effect, and a fixed one is reported until the restart applies it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import stat
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from dbops.security.catalog import A01, A02, A03, A04, A07, A08, A09, control
from dbops.security.findings import Finding, Severity
from dbops.security.rules import LOOPBACK, AuditContext, not_checked, rule

control("SEC080", "pg_hba.conf: no line lets every role reach every database from the network", A01, cis="5.4")
control("SEC081", "pg_hba.conf: no line accepts a whole or very wide address range", A02, cis="5.4")
control("SEC082", "pg_hba.conf: no ident authentication over TCP", A07, cis="5.4")
control("SEC083", "TLS cipher suites: forward secrecy and AEAD only, the server's order", A04, cis="6.10")
control("SEC084", "statements that fail are logged (log_min_error_statement error or lower)", A09, cis="3.1.15")
control("SEC085", "warnings reach the server log (log_min_messages warning or lower)", A09, cis="3.1.14")
control("SEC086", "log_error_verbosity is not terse", A09, cis="3.1.22")
control("SEC087", "DDL is logged (log_statement ddl or more)", A09, cis="3.1.25")
control("SEC088", "log lines name the time, process, user, database, application and client", A09, cis="3.1.24")
control("SEC089", "lock waits, temporary files and checkpoints are logged", A09)
control("SEC090", "the server log is captured (logging collector for the file formats)", A09, cis="3.1.2, 3.1.3")
control("SEC091", "log files are private to the server's OS user (log_file_mode)", A09, cis="3.1.6")
control("SEC092", "the server listens on chosen addresses, not every interface", A02, cis="5.2")
control("SEC093", "installed extensions are at the version the server ships", A03)
control("SEC094", "crash safety and corruption detection are on (fsync, full_page_writes, data checksums)", A08,
        cis="1.4, 6.4")
control("SEC095", "no switch that hides corruption or allows catalog edits", A08, cis="6.5")
control("SEC096", "no extra preloaded libraries, the library path is $libdir", A08, cis="8.3")
control("SEC097", "the data directory is private to the server's OS user", A01, cis="1.4")
control("SEC098", "the Unix socket is not open to every OS user", A01, cis="8.3")
control("SEC099", "connection slots are reserved for superusers", A02)

C, H, M, L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW
SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")
LEVELS = ["debug5", "debug4", "debug3", "debug2", "debug1", "info", "notice", "warning", "error", "log", "fatal",
          "panic"]
PENDING = """
SELECT s.name, f.setting, f.sourcefile FROM pg_settings s
JOIN LATERAL (SELECT setting, sourcefile FROM pg_file_settings f WHERE f.name = s.name
              AND (f.error IS NULL OR NOT f.applied) ORDER BY f.seqno DESC LIMIT 1) f ON true
WHERE s.pending_restart AND s.name = ANY(%s)
"""


def set_system(name: str, value: str, *, reload: bool = True) -> tuple[str, ...]:
    """The ALTER SYSTEM statements that set ``name`` (then reload, unless the setting needs a restart)."""
    if not SETTING_NAME.fullmatch(name):
        raise ValueError(f"not a setting name: {name!r}")
    statement = sql.SQL("ALTER SYSTEM SET {} = {};").format(sql.SQL(name), sql.Literal(value)).as_string(None)
    return (statement, "SELECT pg_reload_conf();") if reload else (statement,)


def reset_system(name: str) -> tuple[str, ...]:
    """The ALTER SYSTEM statements that put ``name`` back to its default (an empty list cannot be SET: '' would be
    a list holding one empty name)."""
    if not SETTING_NAME.fullmatch(name):
        raise ValueError(f"not a setting name: {name!r}")
    return (sql.SQL("ALTER SYSTEM RESET {};").format(sql.SQL(name)).as_string(None), "SELECT pg_reload_conf();")


def remediation(fix: tuple[str, ...], restart: bool = False) -> str:
    return " ".join(fix) + (" -- then restart the server" if restart else "")


def values(ctx: AuditContext, *names: str) -> dict[str, list[tuple[str, str]]]:
    """Each setting's value now and, when the configuration holds another one for the next start, that one:
    {name: [(value, where), ...]} (``where`` is "" for the running value)."""
    out = {name: [(ctx.settings[name], "")] for name in names if name in ctx.settings}
    if not ctx.is_superuser:
        return out
    for name, setting, source in ctx.rows(PENDING, (list(names),)):
        if name in out and setting != out[name][0][0]:
            out[name].append((setting, f" (in {Path(source).name}, applied at the next restart)"))
    return out


def _setting_finding(rule_id: str, title: str, severity: Severity, owasp: str, name: str, evidence: str,
                     fix_value: str, *, restart: bool = False, why: str = "") -> Finding:
    fix = set_system(name, fix_value, reload=not restart)
    return Finding(rule_id, title, severity, owasp, name, evidence + (f": {why}" if why else ""),
                   remediation(fix, restart), fix, True)


# ---- pg_hba.conf ------------------------------------------------------------------------------------------------
HBA = ("SELECT line_number, type, database, user_name, address, netmask, auth_method, error FROM pg_hba_file_rules"
       " ORDER BY line_number")
LOOPBACK_NETS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
OPEN_KEYWORDS = {"all": "every address"}


def hba_network(address: str | None, netmask: str | None) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The network of a host line's address and netmask (None for host names and keywords)."""
    if not address:
        return None
    try:
        host = ipaddress.ip_address(address)
        prefix = bin(int(ipaddress.ip_address(netmask))).count("1") if netmask else host.max_prefixlen
        return ipaddress.ip_network((host, prefix), strict=False)
    except ValueError:
        return None


def is_loopback(address: str | None, network: ipaddress.IPv4Network | ipaddress.IPv6Network | None) -> bool:
    if network is not None:
        return any(network.version == loop.version and network.subnet_of(loop)  # type: ignore[arg-type]
                   for loop in LOOPBACK_NETS)
    return (address or "") in LOOPBACK or address == "samehost"


def too_wide(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Severity | None:
    """High for the whole address space, medium for a very wide range (more than a /16 of IPv4, a /48 of IPv6)."""
    if network.prefixlen == 0:
        return H
    if network.prefixlen < (16 if network.version == 4 else 48):
        return M
    return None


@rule
def hba_reach(ctx: AuditContext) -> list[Finding]:
    try:
        rows = ctx.rows(HBA)
    except psycopg.errors.InsufficientPrivilege:
        why = "pg_hba_file_rules needs superuser"
        return [not_checked("SEC080", "pg_hba.conf reach", A01, why),
                not_checked("SEC081", "pg_hba.conf address ranges", A02, why),
                not_checked("SEC082", "pg_hba.conf ident over TCP", A07, why)]
    out = []
    for line, kind, databases, users, address, netmask, method, error in rows:
        if error or kind == "local" or method == "reject":
            continue
        databases, users = list(databases or []), list(users or [])
        network = hba_network(address, netmask)
        shown = f"{address}/{network.prefixlen}" if network is not None else (address or "")
        where = f"pg_hba.conf line {line}: {kind} {','.join(databases)} {','.join(users)} {shown} {method}"
        subject = f"pg_hba line {line}"
        if method == "ident":
            out.append(Finding(
                "SEC082", "ident authentication over TCP", H, A07, subject,
                f"{where}: ident believes whatever identd the client host runs says about its user, so anyone who"
                " controls a host in that range picks the role", "use scram-sha-256 (or cert) on this line and"
                " reload the configuration (SELECT pg_reload_conf())"))
        if is_loopback(address, network):
            continue
        wide = too_wide(network) if network is not None else (H if address in OPEN_KEYWORDS else None)
        if wide is not None:
            reach = OPEN_KEYWORDS.get(address or "") or (
                "the whole address space" if network is not None and network.prefixlen == 0 else
                f"{network.num_addresses:,} addresses" if network is not None else address)
            out.append(Finding(
                "SEC081", "pg_hba.conf accepts a whole or very wide address range", wide, A02, subject,
                f"{where}: accepts {reach}; only a password stands between the network and the server",
                "narrow the address to the application hosts' subnets (or add reject lines before it) and reload"))
        elif "all" in databases and "all" in users:
            out.append(Finding(
                "SEC080", "pg_hba.conf lets every role reach every database from the network", M, A01, subject,
                f"{where}: any role, the superuser included, may try any database from {shown}",
                "name the databases and roles (or +group) this network needs on the line, keep the superuser"
                " local, and reload"))
    return out


# ---- TLS -----------------------------------------------------------------------------------------------------------
# Suites PostgreSQL never negotiates (no PSK or SRP configuration): left out of the judgement.
UNUSED_KEX = ("psk", "srp")
BROKEN_TOKENS = {"NULL", "eNULL", "aNULL", "ADH", "AECDH", "EXP", "EXPORT", "LOW", "RC4", "DES", "MD5", "ALL",
                 "COMPLEMENTOFALL"}
SAFE_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!PSK"


def cipher_suites(value: str) -> list[dict[str, object]] | None:
    """The TLS 1.2-and-older suites an OpenSSL cipher string selects (as this host's OpenSSL expands it, which is
    how the server's expands it when they share a version); None when it selects nothing."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(value)
    except ssl.SSLError:
        return None
    return [c for c in context.get_ciphers()
            if c.get("protocol") != "TLSv1.3" and not any(k in str(c.get("kea", "")) for k in UNUSED_KEX)]


@rule
def tls_cipher_policy(ctx: AuditContext) -> list[Finding]:
    if ctx.settings.get("ssl") != "on" or ctx.settings.get("ssl_min_protocol_version") == "TLSv1.3":
        return []  # no TLS, or TLS 1.3 only (whose suites are all AEAD with forward secrecy)
    out = []
    value = ctx.settings.get("ssl_ciphers", "")
    tokens = [t for t in re.split(r"[:, ]+", value) if t]
    enabled = {t.lstrip("+") for t in tokens if not t.startswith(("!", "-", "+"))}
    excluded = {t[1:] for t in tokens if t.startswith("!")}
    broken_tokens = sorted(t for t in enabled if t in BROKEN_TOKENS and t not in excluded)
    suites = cipher_suites(value)
    if suites is None:
        severity, why = M, "selects no suite this OpenSSL knows (TLS 1.2 clients cannot connect)"
    else:
        anonymous = [str(c["name"]) for c in suites if c.get("auth") == "auth-null"
                     or "null" in str(c.get("symmetric", "")) or int(str(c.get("strength_bits", 0))) < 128]
        legacy = [str(c["name"]) for c in suites if not c.get("aead")
                  or c.get("kea") not in ("kx-ecdhe", "kx-dhe")]
        if anonymous or broken_tokens:
            severity = H
            why = (f"allows unauthenticated or weak suites ({', '.join((anonymous or broken_tokens)[:3])}...):"
                   " a man in the middle needs no certificate")
        elif legacy:
            severity = M
            why = (f"allows {len(legacy)} of {len(suites)} TLS 1.2 suites without forward secrecy or AEAD"
                   f" (e.g. {', '.join(legacy[:3])})")
        else:
            severity, why = None, ""
    if severity is not None:
        out.append(_setting_finding("SEC083", "TLS allows weak cipher suites", severity, A04, "ssl_ciphers",
                                    f"ssl_ciphers = '{value}'", SAFE_CIPHERS, why=why))
    if ctx.settings.get("ssl_prefer_server_ciphers") == "off":
        out.append(_setting_finding("SEC083", "TLS lets the client choose the cipher suite", L, A04,
                                    "ssl_prefer_server_ciphers", "ssl_prefer_server_ciphers = off", "on",
                                    why="the client's order wins, so an old client settles on its weakest suite"))
    return out


# ---- logging --------------------------------------------------------------------------------------------------------
def _level_above(ctx: AuditContext, name: str, limit: str) -> str | None:
    value = ctx.settings.get(name, "")
    return value if value in LEVELS and LEVELS.index(value) > LEVELS.index(limit) else None


@rule
def log_levels(ctx: AuditContext) -> list[Finding]:
    out = []
    value = _level_above(ctx, "log_min_error_statement", "error")
    if value:
        out.append(_setting_finding(
            "SEC084", "failing statements are not logged", M, A09, "log_min_error_statement",
            f"log_min_error_statement = {value}", "error",
            why="the statements behind errors (injection probes, permission denials) leave no trace in the log"))
    value = _level_above(ctx, "log_min_messages", "warning")
    if value:
        out.append(_setting_finding(
            "SEC085", "warnings and errors are not logged", M, A09, "log_min_messages",
            f"log_min_messages = {value}", "warning",
            why="only messages at that level or above reach the log, so errors and authentication warnings are lost"))
    if ctx.settings.get("log_error_verbosity") == "terse":
        out.append(_setting_finding(
            "SEC086", "log messages are terse", L, A09, "log_error_verbosity", "log_error_verbosity = terse",
            "verbose", why="DETAIL, HINT, QUERY and CONTEXT are left out of every logged error"))
    if ctx.settings.get("log_statement") == "none":
        out.append(_setting_finding(
            "SEC087", "DDL is not logged", M, A09, "log_statement", "log_statement = none", "ddl",
            why="CREATE, ALTER, DROP, GRANT and ALTER ROLE leave no trace: who changed a grant or a policy cannot"
                " be told afterwards"))
    return out


PREFIX_FIELDS = [  # (what, escapes any of which shows it, severity when missing)
    ("the time", ("%m", "%t", "%n"), M),
    ("the process", ("%p", "%c"), L),
    ("the user", ("%u",), M),
    ("the database", ("%d",), M),
    ("the application", ("%a",), L),
    ("the client address", ("%h", "%r"), L),
]
SUGGESTED_PREFIX = "%m [%p] %quser=%u,db=%d,app=%a,client=%h "


@rule
def log_line_prefix(ctx: AuditContext) -> list[Finding]:
    destinations = {d.strip() for d in ctx.settings.get("log_destination", "stderr").split(",")}
    if "log_line_prefix" not in ctx.settings or not destinations & {"stderr", "syslog", "eventlog"}:
        return []  # csvlog and jsonlog carry every field themselves
    prefix = ctx.settings["log_line_prefix"]
    missing = [(what, severity) for what, escapes, severity in PREFIX_FIELDS if not any(e in prefix for e in escapes)]
    if not missing:
        return []
    severity = M if any(s is M for _w, s in missing) else L
    fix = set_system("log_line_prefix", SUGGESTED_PREFIX)
    return [Finding("SEC088", "log lines do not say who did what", severity, A09, "log_line_prefix",
                    f"log_line_prefix = '{prefix}' does not record {', '.join(w for w, _s in missing)}",
                    remediation(fix) + " (and give log readers the new prefix, e.g. DBOPS_LOGS_LINE_PREFIX)",
                    fix, True)]


@rule
def operational_logging(ctx: AuditContext) -> list[Finding]:
    out = []
    checks = [
        ("log_lock_waits", "off", "on", "sessions stuck behind a lock holder (or a lock-out) are not logged"),
        ("log_temp_files", "-1", "0", "queries spilling to temporary files (bulk reads of a table) are not logged"),
        ("log_checkpoints", "off", "on", "checkpoints, and the WAL pressure behind them, are not logged"),
    ]
    for name, bad, good, why in checks:
        if ctx.settings.get(name) == bad:
            out.append(_setting_finding("SEC089", f"{name} is {bad}", L, A09, name, f"{name} = {bad}", good,
                                        why=why))
    return out


@rule
def log_capture(ctx: AuditContext) -> list[Finding]:
    found = values(ctx, "logging_collector")
    if "logging_collector" not in found or "log_destination" not in ctx.settings:
        return []
    destinations = [d.strip() for d in ctx.settings["log_destination"].split(",") if d.strip()]
    files = [d for d in destinations if d in ("csvlog", "jsonlog")]
    for value, where in found["logging_collector"]:
        if value == "on":
            continue
        fix = set_system("logging_collector", "on", reload=False)
        if files:
            severity, why = M, (f"log_destination = {ctx.settings['log_destination']} but {', '.join(files)} is only"
                                " written by the collector: messages fall back to plain stderr")
        elif "stderr" in destinations and not {"syslog", "eventlog"} & set(destinations):
            severity, why = L, ("the server log is whatever captured the postmaster's stderr when it started (no"
                                " rotation, lost with that file or terminal)")
        else:
            continue
        return [Finding("SEC090", "the server log is not captured by the logging collector", severity, A09,
                        "logging_collector", f"logging_collector = {value}{where}: {why}",
                        remediation(fix, restart=True), fix, True)]
    return []


@rule
def log_file_mode(ctx: AuditContext) -> list[Finding]:
    value = ctx.settings.get("log_file_mode")
    try:
        mode = int(value or "", 8)
    except ValueError:
        return []
    if not mode & 0o027:
        return []
    who = "every OS user on the host" if mode & 0o007 else "the server's OS group"
    return [_setting_finding("SEC091", "log files readable or writable beyond the server's OS user", M, A09,
                             "log_file_mode", f"log_file_mode = {value}", "0600",
                             why=f"{who} can read (or alter) the log files the collector writes, with the"
                                 " statements, parameters and client addresses they hold")]


# ---- listening and connection slots -------------------------------------------------------------------------------
@rule
def listen_everywhere(ctx: AuditContext) -> list[Finding]:
    for value, where in values(ctx, "listen_addresses").get("listen_addresses", []):
        addresses = {a.strip() for a in value.split(",")}
        if addresses & {"*", "0.0.0.0", "::"}:
            fix = set_system("listen_addresses", "localhost", reload=False)
            return [Finding(
                "SEC092", "the server listens on every interface", L, A02, "listen_addresses",
                f"listen_addresses = '{value}'{where}: every interface of the host, including ones added later,"
                " accepts connections (pg_hba.conf is then the only barrier)",
                "list the addresses the clients use (ALTER SYSTEM SET listen_addresses = '<address>', ...) and"
                " restart; the SQL below keeps it on loopback", fix, True)]
    return []


@rule
def reserved_connections(ctx: AuditContext) -> list[Finding]:
    for value, where in values(ctx, "superuser_reserved_connections").get("superuser_reserved_connections", []):
        if value == "0":
            fix = set_system("superuser_reserved_connections", "3", reload=False)
            return [Finding(
                "SEC099", "no connection slot reserved for superusers", L, A02, "superuser_reserved_connections",
                f"superuser_reserved_connections = 0{where}: when clients fill max_connections (a leak or a flood),"
                " an administrator cannot connect to stop it", remediation(fix, restart=True), fix, True)]
    return []


# ---- software and integrity --------------------------------------------------------------------------------------
@rule
def outdated_extensions(ctx: AuditContext) -> list[Finding]:
    rows = ctx.rows(
        "SELECT e.extname, e.extversion, a.default_version FROM pg_extension e"
        " JOIN pg_available_extensions a ON a.name = e.extname"
        " WHERE a.default_version IS NOT NULL AND e.extversion <> a.default_version ORDER BY 1"
    )
    out = []
    for name, installed, available in rows:
        fix = sql.SQL("ALTER EXTENSION {} UPDATE;").format(sql.Identifier(name)).as_string(None)
        out.append(Finding(
            "SEC093", "extension behind the version the server ships", L, A03, f"extension {name}",
            f"extension {name} is at {installed}; the server's files provide {available} (fixes in the newer"
            " scripts, e.g. to function privileges or search_path, are not applied)", fix, (fix,)))
    return out


@rule
def crash_safety(ctx: AuditContext) -> list[Finding]:
    out = []
    for name, why in (("fsync", "a crash or power loss can corrupt the cluster beyond repair"),
                      ("full_page_writes", "a crash during a page write can leave torn pages that WAL cannot repair")):
        if ctx.settings.get(name) == "off":
            out.append(_setting_finding("SEC094", f"{name} is off", M, A08, name, f"{name} = off", "on", why=why))
    if ctx.settings.get("data_checksums") == "off":
        out.append(Finding(
            "SEC094", "data checksums are off", L, A08, "data_checksums",
            "data_checksums = off: pages corrupted on disk (or altered outside PostgreSQL) are read without an"
            " error", "stop the server and run pg_checksums --enable -D <data directory> (or initdb -k for a new"
            " cluster, restoring into it)"))
    return out


@rule
def integrity_overrides(ctx: AuditContext) -> list[Finding]:
    out = []
    for name, why in (
        ("zero_damaged_pages", "damaged pages are silently zeroed on read, destroying the rows on them"),
        ("ignore_checksum_failure", "pages that fail their checksum are used anyway"),
        ("allow_system_table_mods", "the system catalogs can be altered directly, bypassing every check"),
    ):
        if ctx.settings.get(name) == "on":
            out.append(_setting_finding("SEC095", f"{name} is on", H, A08, name, f"{name} = on", "off", why=why))
    return out


@rule
def library_loading(ctx: AuditContext) -> list[Finding]:
    out = []
    for name in ("session_preload_libraries", "local_preload_libraries"):
        value = ctx.settings.get(name, "")
        if value.strip():
            fix = reset_system(name)
            out.append(Finding(
                "SEC096", f"{name} loads libraries into every session", M, A08, name,
                f"{name} = '{value}': their code runs inside each new session; confirm each one is wanted and"
                " installed from the packages", remediation(fix), fix, True))
    value = ctx.settings.get("dynamic_library_path")
    if value is not None and value.strip() != "$libdir":
        out.append(_setting_finding(
            "SEC096", "libraries load from outside $libdir", M, A08, "dynamic_library_path",
            f"dynamic_library_path = '{value}'", "$libdir",
            why="LOAD and C functions find shared libraries in those directories before (or besides) the"
                " server's own"))
    return out


# ---- files on the server's host --------------------------------------------------------------------------------------
def local_server(ctx: AuditContext) -> tuple[Path | None, str]:
    """The data directory when the server runs on this host (its postmaster is our backend's parent), with why not
    otherwise."""
    data_dir = ctx.settings.get("data_directory")
    if not data_dir:
        return None, "data_directory is shown to superusers (and pg_read_all_settings) only"
    backend = ctx.rows("SELECT pg_backend_pid()")[0][0]
    try:
        parent = psutil.Process(backend).ppid()
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
    except (psutil.Error, OSError):
        return None, "the server does not run on this host, or its data directory is not readable here"
    if not lines or lines[0].strip() != str(parent):
        return None, "the server does not run on this host (its postmaster is not this backend's parent)"
    return Path(data_dir), ""


@rule
def data_directory_mode(ctx: AuditContext) -> list[Finding]:
    data_dir, why = local_server(ctx)
    if data_dir is None:
        return [not_checked("SEC097", "data directory permissions", A01, why)]
    mode = stat.S_IMODE(os.stat(data_dir).st_mode)
    if mode in (0o700, 0o750):
        return []
    severity = H if mode & 0o002 or mode & 0o020 else M
    return [Finding(
        "SEC097", "the data directory is open beyond the server's OS user", severity, A01, "data directory",
        f"data directory {data_dir} has mode {mode:04o} (PostgreSQL creates it 0700, or 0750 with group access):"
        f" other OS users {'can write into it' if severity is H else 'can list and traverse it'}, and the server"
        " refuses to start with it", f"chmod 0700 {data_dir}")]


@rule
def unix_socket_access(ctx: AuditContext) -> list[Finding]:
    found = values(ctx, "unix_socket_permissions")
    directories = [d.strip() for d in ctx.settings.get("unix_socket_directories", "").split(",") if d.strip()]
    if "unix_socket_permissions" not in found or not directories:
        return []
    if local_server(ctx)[0] is None:
        return []  # who reaches the socket depends on its directories, which only the server's host can see
    reachable = []
    for directory in directories:
        try:  # others reach the socket when they may traverse its directory and every one above it
            modes = [stat.S_IMODE(os.stat(p).st_mode) for p in (Path(directory), *Path(directory).parents)]
        except OSError:
            continue
        if all(mode & 0o001 for mode in modes):
            reachable.append(f"{directory} (mode {modes[0]:04o})")
    for value, where in found["unix_socket_permissions"]:
        try:
            mode = int(value, 8)
        except ValueError:
            continue
        if mode & 0o006 and reachable:
            fix = set_system("unix_socket_permissions", "0770", reload=False)
            return [Finding(
                "SEC098", "the Unix socket is open to every OS user", L, A01, "unix_socket_permissions",
                f"unix_socket_permissions = {value}{where}, in {', '.join(reachable)}: every OS user of the host can"
                " open a connection (and try every local pg_hba.conf line)",
                remediation(fix, restart=True) + " (with unix_socket_group set to the clients' group), or make the"
                " socket directory 0700/0750", fix, True)]
    return []

