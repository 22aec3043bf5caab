"""Read the settings once: defaults < ``dbops.yaml`` < ``DBOPS_*`` variables, every problem collected with its line.

Global options: the default, then the file's top-level key, then the option's variable. Target options, for each
target: the default, then the file's ``defaults:`` block, then the option's variable, then the target's own key in
``targets.<name>:``. So a variable changes every target that does not say otherwise, and with no file (one implicit
target) it changes that target, exactly as the variables did before there was a file.

:func:`load_settings` is the one function that reads ``os.environ`` and the file. Secrets stay references
(:class:`~dbops.settings.model.SecretRef`); :func:`check_settings` adds what only matters when a value is used (an
unset variable, a missing folder), which ``dbops config check`` reports up front.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dbops.errors import ConfigError, DbopsError
from dbops.pg.connect import check_url
from dbops.redact import redact
from dbops.settings import model
from dbops.settings.options import (
    BY_ENV,
    BY_KEY,
    DEFAULT_TARGET,
    OPTIONS,
    SCHEDULES,
    TARGET_NAME,
    DeriveContext,
    Derived,
    Invalid,
    Option,
    PathKind,
    Scope,
    options,
)

CONFIG_ENV = "DBOPS_CONFIG"
RESERVED_DB_NAMES = ("postgres", "template0", "template1", model.DAGSTER_DB_NAME)
# Words that name a secret: such a key in the file is refused, with the *_env key to use instead.
SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "url", "webhook", "database_url", "access_key_id",
                "secret_access_key", "slack_webhook", "webhook_url", "server_url", "scratch_url", "dsn")
# Variables dbops sets for itself (a GX datasource URL) or that only the test suite reads.
_INTERNAL_ENV_PREFIXES = ("DBOPS_GX_URL_", "DBOPS_TEST_")
_SECTIONS: dict[str, type] = {
    "dagster": model.DagsterSettings,
    "seed": model.SeedSettings,
    "loadtest": model.LoadTestSettings,
    "migrate": model.MigrateSettings,
    "profile": model.ProfileSettings,
    "validation": model.ValidationSettings,
    "partitions": model.PartitionSettings,
    "matviews": model.MatviewSettings,
    "logs": model.LogSettings,
    "rehearsal": model.RehearsalSettings,
    "backup": model.BackupSettings,
    "backup.s3": model.S3Settings,
    "health": model.HealthSettings,
    "alerts": model.AlertSettings,
    "alerts.smtp": model.SmtpSettings,
}
# Secrets that are PostgreSQL URLs: checked as such when their variable is set (the message never shows the value).
_TARGET_URLS = ("url_env", "rehearsal.server_url_env", "profile.scratch_url_env", "health.pooler_url_env")


@dataclass(frozen=True)
class Problem:
    """One mistake: where (``dbops.yaml:12``, ``DBOPS_PG_PORT``, or None for a default), the key, what, the fix."""

    where: str | None
    key: str
    problem: str
    fix: str

    def __str__(self) -> str:
        # Problem and fix are redacted; the location and key are ours (and "…password: unknown key" is no secret).
        head = f"{self.where}: " if self.where else ""
        return f"{head}{self.key}: {redact(self.problem)} — {redact(self.fix)}"


class SettingsError(ConfigError):
    """The configuration has mistakes; ``problems`` lists every one (the message shows the first)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = problems[0]
        more = f" ({len(problems) - 1} more: run `dbops config check`)" if len(problems) > 1 else ""
        head = f"{first.where}: " if first.where else ""
        super().__init__(f"{head}{first.key}: {first.problem}", first.fix + more)


@dataclass
class _Leaf:
    """A value found in the file: the constructed YAML value and its line (1-based)."""

    value: Any
    line: int


class _File:
    """A parsed ``dbops.yaml``: nodes keep their line numbers (PyYAML's compose API)."""

    def __init__(self, path: Path, shown_as: str, problems: list[Problem]) -> None:
        self.path, self.shown_as, self.problems = path, shown_as, problems
        self.root: yaml.MappingNode | None = None
        try:
            text = path.read_text()
        except OSError as exc:
            problems.append(Problem(shown_as, "file", f"cannot be read: {exc.strerror}",
                                    "fix the path or DBOPS_CONFIG"))
            return
        self._constructor = yaml.SafeLoader("")
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{shown_as}:{mark.line + 1}" if mark else shown_as
            reason = getattr(exc, "problem", None) or "invalid YAML"
            context = f"{getattr(exc, 'context', None) or ''} {reason}"
            hint = " (quote values that start with * or &, e.g. cron: \"*/15 * * * *\")" if "alias" in context else ""
            problems.append(Problem(where, "file", f"cannot be parsed: {reason}", f"fix the YAML syntax{hint}"))
            return
        if root is None:
            return
        if not isinstance(root, yaml.MappingNode):
            problems.append(Problem(self.at(root), "file", "must be a mapping of keys (home:, defaults:, targets:)",
                                    "see dbops.example.yaml"))
            return
        self.root = root

    def at(self, node: yaml.Node) -> str:
        return f"{self.shown_as}:{node.start_mark.line + 1}"

    def construct(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def items(self, node: yaml.MappingNode, path: str) -> Iterator[tuple[str, yaml.Node, yaml.Node]]:
        """The mapping's (key, key node, value node), duplicates and non-string keys reported."""
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or not key:
                self.problems.append(Problem(self.at(key_node), path or "file", "has a key that is not a name",
                                             "use plain lower-case keys"))
                continue
            if key in seen:
                self.problems.append(Problem(self.at(key_node), _join(path, key), "is given twice",
                                             "keep one of the two"))
                continue
            seen.add(key)
            yield key, key_node, value_node


def _order(problem: Problem) -> tuple[int, str, int]:
    """File problems by line, then the environment's, then the rest (the sort is stable)."""
    where = problem.where or ""
    name, _, line = where.rpartition(":")
    if line.isdigit():
        return 0, name, int(line)
    return (1 if where else 2), "", 0


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _tree(scope: Scope) -> dict[str, Any]:
    """The allowed keys of a scope as nested dicts; leaves are Options."""
    tree: dict[str, Any] = {}
    for opt in options(scope):
        if not opt.in_file:
            continue
        *heads, last = opt.key.split(".")
        level = tree
        for head in heads:
            level = level.setdefault(head, {})
        level[last] = opt
    return tree


def _leaf_names(tree: dict[str, Any], prefix: str = "") -> dict[str, list[str]]:
    """Last key segment -> the full keys that end with it (to suggest ``backup.keep_last`` for ``keep_last``)."""
    out: dict[str, list[str]] = {}
    for key, sub in tree.items():
        full = _join(prefix, key)
        out.setdefault(key, []).append(full)
        if isinstance(sub, dict):
            for name, fulls in _leaf_names(sub, full).items():
                out.setdefault(name, []).extend(fulls)
    return out


GLOBAL_TREE = _tree("global")
TARGET_TREE = _tree("target")
_GLOBAL_LEAVES = _leaf_names(GLOBAL_TREE)
_TARGET_LEAVES = _leaf_names(TARGET_TREE)


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


Layer = dict[str, tuple[str, Any]]  # option key -> (source, value); a list of layers goes lowest first


class _Loader:
    def __init__(self, environ: Mapping[str, str], cwd: Path) -> None:
        self.environ, self.cwd = environ, cwd
        self.problems: list[Problem] = []
        self.sources: dict[str, str] = {}
        self.file: _File | None = None

    # --- reading the file ------------------------------------------------------------------------------------------

    def unknown(self, node: yaml.Node, path: str, key: str, tree: dict[str, Any], scope: Scope) -> None:
        """An unknown key: a literal secret, an option of the other scope, or a typo with its closest match."""
        assert self.file is not None
        where, full = self.file.at(node), _join(path, key)
        here = sorted(tree) + (["defaults", "targets"] if scope == "global" and not path else [])
        close = difflib.get_close_matches(key, here, n=1, cutoff=0.6)
        if isinstance(tree.get(f"{key}_env"), Option):
            self.problems.append(Problem(where, full, "a literal secret is not accepted in the file",
                                         f"export it in an environment variable and write {key}_env: <its name> "
                                         f"(e.g. {tree[f'{key}_env'].example})"))
            return
        if key in SECRET_WORDS:
            also = f"did you mean {close[0]}? " if close else ""
            self.problems.append(Problem(where, full, "unknown key; secrets are never written in the file",
                                         f"{also}keep a secret in an environment variable and name it with url_env "
                                         "(the database URL carries its password), password_env or key_env, or "
                                         "give key_file"))
            return
        target_top = path == "defaults" or (path.startswith("targets.") and path.count(".") == 1)
        if scope == "global" and not path and key in TARGET_TREE:
            self.problems.append(Problem(where, full, "is a target option",
                                         f"put it under defaults: (every target) or targets.<name>: ({key}: ...)"))
            return
        if scope == "target" and target_top and key in GLOBAL_TREE:
            self.problems.append(Problem(where, full, "is a global option", "move it to the top level of the file"))
            return
        leaves = _GLOBAL_LEAVES if scope == "global" else _TARGET_LEAVES
        if close:
            fix = f"did you mean {close[0]}?"
        elif key in leaves:
            fix = f"did you mean {' or '.join(leaves[key][:3])}? (it belongs to another section)"
        else:
            fix = "valid keys here: " + ", ".join(here)
        self.problems.append(Problem(where, full, "unknown key", fix))

    def walk(self, node: yaml.Node, path: str, tree: dict[str, Any], scope: Scope, out: dict[str, _Leaf]) -> None:
        """Collect the leaves under ``node`` into ``out`` (option key -> value), reporting every unknown key."""
        assert self.file is not None
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
            return  # "backup:" with nothing under it
        if not isinstance(node, yaml.MappingNode):
            self.problems.append(Problem(self.file.at(node), path, "must be a mapping of keys",
                                         f"indent its keys under it ({', '.join(sorted(tree)[:4])}, ...)"))
            return
        for key, key_node, value_node in self.file.items(node, path):
            sub = tree.get(key)
            if sub is None:
                self.unknown(key_node, path, key, tree, scope)
            elif isinstance(sub, Option):
                out[sub.key] = _Leaf(self.file.construct(value_node), value_node.start_mark.line + 1)
            else:
                self.walk(value_node, _join(path, key), sub, scope, out)

    def read_top(self, root: yaml.MappingNode, top: dict[str, _Leaf], defaults: dict[str, _Leaf],
                 per_target: dict[str, dict[str, _Leaf]], target_lines: dict[str, str]) -> None:
        assert self.file is not None
        for key, key_node, value_node in self.file.items(root, ""):
            if key == "defaults":
                self.walk(value_node, "defaults", TARGET_TREE, "target", defaults)
            elif key == "targets":
                if not isinstance(value_node, yaml.MappingNode) or not value_node.value:
                    self.problems.append(Problem(self.file.at(value_node), "targets",
                                                 "must map at least one target name to its settings",
                                                 "write e.g. targets: {dbops: {embedded: true}}"))
                    continue
                for name, name_node, body in self.file.items(value_node, "targets"):
                    if not TARGET_NAME.match(name):
                        self.problems.append(Problem(self.file.at(name_node), f"targets.{name}",
                                                     "is not a valid target name (it prefixes Dagster asset keys "
                                                     "and pool names)", "use lower-case letters, digits and _, "
                                                     "starting with a letter, at most 63 characters, e.g. shop"))
                        continue
                    target_lines[name] = self.file.at(name_node)
                    per_target[name] = {}
                    self.walk(body, f"targets.{name}", TARGET_TREE, "target", per_target[name])
            elif key == "config_file":
                self.problems.append(Problem(self.file.at(key_node), key, "cannot be set in the file itself",
                                             f"set {CONFIG_ENV}, or pass --file"))
            elif isinstance(GLOBAL_TREE.get(key), Option):
                top[key] = _Leaf(self.file.construct(value_node), value_node.start_mark.line + 1)
            elif key in GLOBAL_TREE:
                self.walk(value_node, key, GLOBAL_TREE[key], "global", top)
            else:
                self.unknown(key_node, "", key, GLOBAL_TREE, "global")

    # --- values --------------------------------------------------------------------------------------------------

    def parse(self, opt: Option, raw: Any, where: str, full: str, base: Path) -> tuple[bool, Any]:
        """(ok, value) of one value of the file (``base``: the file's folder) or the environment (``base``: the
        working directory); a problem is recorded when not ok."""
        if raw is None:  # "key:" or "key: ~": explicitly none, where none is a value
            if opt.accepts_none:
                return True, opt.kind.empty
            self.problems.append(Problem(where, full, "has no value", f"set it to e.g. {opt.example} or leave it out"))
            return False, None
        if isinstance(raw, str) and redact(raw) != raw:
            self.problems.append(Problem(where, full, "contains a password or a token",
                                         "keep secrets in environment variables and name them with *_env keys"))
            return False, None
        try:
            value = opt.kind.parse(raw, opt.example)
        except Invalid as exc:
            self.problems.append(Problem(where, full, exc.problem, exc.fix))
            return False, None
        if isinstance(opt.kind, PathKind) and not value.is_absolute():
            value = base / value
        if opt.secret:
            value = model.SecretRef(value, self.environ)
        return True, value

    def file_layer(self, leaves: dict[str, _Leaf], prefix: str) -> Layer:
        layer: Layer = {}
        if self.file is None:
            return layer
        for key, leaf in leaves.items():
            where = f"{self.file.shown_as}:{leaf.line}"
            ok, value = self.parse(BY_KEY[key], leaf.value, where, _join(prefix, key), self.file.path.parent)
            if ok:
                layer[key] = (where, value)
        return layer

    def env_layer(self, scope: Scope, prefix: str) -> Layer:
        """The options' variables; a secret's variable being set means "the secret is in it"."""
        layer: Layer = {}
        for opt in options(scope):
            name = opt.env
            raw = self.environ.get(name) if name and opt.in_file else None
            if not name or not raw or not raw.strip():
                continue
            if opt.secret:
                layer[opt.key] = (name, model.SecretRef(name, self.environ))
                continue
            ok, value = self.parse(opt, raw, name, _join(prefix, opt.key), self.cwd)
            if ok:
                layer[opt.key] = (name, value)
        return layer

    def resolve(self, scope: Scope, layers: list[Layer], ctx: DeriveContext, prefix: str) -> dict[str, Any]:
        """Merge ``layers`` (lowest first) over the defaults, in table order (a derived default sees the values
        above it).

        When a layer turns on one option of an ``exclusive`` group (``url_env`` / ``embedded``, ``key_env`` /
        ``key_file``), the others of that group from lower layers are dropped: the target that says
        ``embedded: true`` is embedded whatever DBOPS_DATABASE_URL says."""
        chosen: Layer = {}
        for layer in layers:
            for key, entry in layer.items():
                group = BY_KEY[key].exclusive
                if group and entry[1]:
                    for other in [k for k in chosen if BY_KEY[k].exclusive == group and k not in layer]:
                        del chosen[other]
                chosen[key] = entry
        for opt in options(scope):
            if opt.key in ctx.values:  # given by the caller (the file's own path)
                continue
            full = _join(prefix, opt.key)
            if opt.key in chosen:
                self.sources[full], value = chosen[opt.key]
            else:
                self.sources[full] = "default"
                value = opt.default.compute(ctx) if isinstance(opt.default, Derived) else opt.default
            ctx.values[opt.key] = value
        return {o.key: ctx.values[o.key] for o in options(scope)}

    def config_path(self, explicit: Path | None) -> Path | None:
        """``--file``, else DBOPS_CONFIG (which must exist), else ./dbops.yaml when present."""
        path, where = explicit, "--file"
        if path is None and self.environ.get(CONFIG_ENV):
            path, where = Path(self.environ[CONFIG_ENV]).expanduser(), CONFIG_ENV
        if path is None:
            default = BY_KEY["config_file"].default
            path, where = default.compute(DeriveContext({}, None, False, self.cwd)), "default"
        self.sources["config_file"] = where
        if path is None:
            return None
        path = path if path.is_absolute() else self.cwd / path
        if not path.is_file():
            self.problems.append(Problem(where, "config_file", f"no such file: {path}",
                                         f"fix the path, or unset {CONFIG_ENV} to use ./dbops.yaml when present"))
            return None
        return path

    def load(self, explicit: Path | None) -> model.Settings:
        path = self.config_path(explicit)
        top: dict[str, _Leaf] = {}
        defaults: dict[str, _Leaf] = {}
        per_target: dict[str, dict[str, _Leaf]] = {}
        target_lines: dict[str, str] = {}
        if path is not None:
            self.file = _File(path, _display(path, self.cwd), self.problems)
            if self.file.root is not None:
                self.read_top(self.file.root, top, defaults, per_target, target_lines)
        names = tuple(per_target) or (DEFAULT_TARGET,)  # no targets: one implicit target, as without a file

        # globals: default < file < env
        ctx = DeriveContext({"config_file": path}, None, bool(per_target), self.cwd, names)
        glob = self.resolve("global", [self.file_layer(top, ""), self.env_layer("global", "")], ctx, "")

        # targets: default < defaults: < env < targets.<name>
        defaults_layer = self.file_layer(defaults, "defaults")
        self.check_layer(defaults_layer, "defaults")
        env_layer = self.env_layer("target", "")  # read once: a bad variable is one problem, not one per target
        targets: dict[str, model.TargetSettings] = {}
        for name in names:
            prefix = f"targets.{name}"
            own = self.file_layer(per_target.get(name, {}), prefix)
            tctx = DeriveContext(dict(glob), name, bool(per_target), self.cwd, names)
            values = self.resolve("target", [defaults_layer, env_layer, own], tctx, prefix)
            self.check_layer(own, prefix)
            self.check_target(name, values, target_lines.get(name))
            targets[name] = self.build_target(name, values)
        self.check_all(glob, targets, target_lines)
        if self.problems:
            raise SettingsError(sorted(self.problems, key=_order))
        return model.Settings(
            **self.build_fields(model.Settings, glob, "", skip={"targets", "sources", "warnings"}),
            targets=targets, sources=dict(self.sources), warnings=tuple(self.unknown_env()),
        )

    # --- checks across options -----------------------------------------------------------------------------------

    def where(self, full: str) -> str | None:
        source = self.sources.get(full, "default")
        return None if source == "default" else source

    def check_layer(self, layer: Layer, prefix: str) -> None:
        """Within one block of the file, the options of an exclusive group are alternatives: one of them at most."""
        groups: dict[str, list[str]] = {}
        for key, (_, value) in layer.items():
            if BY_KEY[key].exclusive and value:
                groups.setdefault(BY_KEY[key].exclusive or "", []).append(key)
        for keys in groups.values():
            if len(keys) > 1:
                full = _join(prefix, keys[-1])
                self.problems.append(Problem(layer[keys[-1]][0], full, f"is set together with {', '.join(keys[:-1])}",
                                             f"give one of {' or '.join(keys)}"))

    def check_target(self, name: str, values: dict[str, Any], line: str | None) -> None:
        prefix = f"targets.{name}"

        def add(key: str, problem: str, fix: str) -> None:
            full = _join(prefix, key)
            self.problems.append(Problem(self.where(full) or line, full, problem, fix))

        if not values["embedded"] and values["url_env"] is None:
            add("embedded", "is off but no url_env names the database",
                "set url_env: to the variable holding its URL, or embedded: true")
        if values["embedded"] and values["db_name"] in RESERVED_DB_NAMES:
            add("db_name", f"{values['db_name']!r} is dbops' own or PostgreSQL's database",
                f"name the database after the target, e.g. db_name: {name}")
        if values["backup.store"] == "s3" and not values["backup.s3.bucket"]:
            add("backup.s3.bucket", "is needed with backup.store: s3", "set backup.s3.bucket (or DBOPS_BACKUP_BUCKET)")
        if (values["backup.s3.access_key_id_env"] is None) != (values["backup.s3.secret_access_key_env"] is None):
            add("backup.s3.access_key_id_env", "and backup.s3.secret_access_key_env go together",
                "set both, or neither to use the usual AWS_* variables")
        if values["alerts.smtp.host"] and (not values["alerts.smtp.sender"] or not values["alerts.smtp.recipients"]):
            add("alerts.smtp.host", "is set but alerts.smtp.sender or alerts.smtp.recipients is empty",
                "set both (DBOPS_ALERT_SMTP_FROM / DBOPS_ALERT_SMTP_TO)")
        for key in _TARGET_URLS:
            self.check_url_ref(_join(prefix, key), values[key])

    def check_url_ref(self, full: str, ref: model.SecretRef | None) -> None:
        """A referenced URL that is set must be a PostgreSQL URL; the message never shows its password."""
        if ref is None or not ref.is_set:
            return
        try:
            check_url(ref.resolve())
        except DbopsError as exc:
            self.problems.append(Problem(self.where(full) or ref.env, full,
                                         f"{ref.env} is not a usable PostgreSQL URL: {exc.problem}",
                                         exc.fix or "use postgresql://user:password@host:port/dbname"))

    def check_all(self, glob: dict[str, Any], targets: dict[str, model.TargetSettings],
                  target_lines: dict[str, str]) -> None:
        self.check_url_ref("dagster.url_env", glob["dagster.url_env"])
        if glob["default_target"] not in targets:
            close = difflib.get_close_matches(glob["default_target"], list(targets), n=1)
            self.problems.append(Problem(self.where("default_target"), "default_target",
                                         f"no target named {glob['default_target']!r}",
                                         f"did you mean {close[0]}?" if close else "use one of " + ", ".join(targets)))
        databases: dict[str, str] = {}
        stores: list[tuple[tuple[str, ...], str]] = []
        for name, t in targets.items():
            where = target_lines.get(name)
            if t.embedded and t.db_name in databases:
                full = f"targets.{name}.db_name"
                self.problems.append(Problem(self.where(full) or where, full,
                                             f"database {t.db_name!r} on the embedded server is targets."
                                             f"{databases[t.db_name]}'s too", "give each embedded target its own "
                                             "db_name"))
            elif t.embedded:
                databases[t.db_name] = name
            b = t.backup
            local = b.store == "local"
            store = ("local", str(b.directory)) if local else ("s3", b.s3.endpoint or "", b.s3.bucket or "",
                                                              b.s3.prefix.strip("/"))
            for other_store, other in stores:
                nested = local and other_store[0] == "local" and (Path(store[1]).is_relative_to(other_store[1])
                                                                  or Path(other_store[1]).is_relative_to(store[1]))
                if store == other_store or nested:
                    key = "backup.directory" if local else "backup.s3.prefix"
                    full = f"targets.{name}.{key}"
                    self.problems.append(Problem(self.where(full) or where, full,
                                                 f"is (or shares a folder with) the backup store of targets.{other}",
                                                 "give each target its own backup.directory or backup.s3.prefix"))
                    break
            stores.append((store, name))

    def unknown_env(self) -> Iterator[str]:
        """Variables that look like dbops' but are not (a typo would otherwise be ignored without a word)."""
        known = set(BY_ENV) | {CONFIG_ENV}
        for name in sorted(self.environ):
            if name.startswith("DBOPS_") and name not in known and not name.startswith(_INTERNAL_ENV_PREFIXES):
                close = difflib.get_close_matches(name, sorted(known), n=1)
                yield f"{name}: not a dbops variable, ignored" + (f" — did you mean {close[0]}?" if close else "")

    # --- typed result --------------------------------------------------------------------------------------------

    def build_fields(self, cls: type, values: dict[str, Any], section: str,
                     skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        """The dataclass fields of ``cls`` from the flat option values of ``section`` (nested sections recursively)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in skip:
                continue
            path = _join(section, f.name)
            if path in _SECTIONS:
                out[f.name] = _SECTIONS[path](**self.build_fields(_SECTIONS[path], values, path))
                continue
            (opt,) = [o for o in OPTIONS if o.section == section and o.attr == f.name and o.key in values]
            out[f.name] = values[opt.key]
        return out

    def build_target(self, name: str, values: dict[str, Any]) -> model.TargetSettings:
        schedules = {s: model.ScheduleSettings(values[f"schedules.{s}.enabled"], values[f"schedules.{s}.cron"])
                     for s, *_ in SCHEDULES}
        return model.TargetSettings(
            name=name, schedules=schedules,
            **self.build_fields(model.TargetSettings, values, "", skip={"name", "schedules"}),
        )


def load_settings(env: Mapping[str, str] | None = None, cwd: Path | None = None, *,
                  config_file: Path | None = None) -> model.Settings:
    """The settings of this process: the one place that reads ``os.environ`` (when ``env`` is None) and the file
    (``config_file``, else ``DBOPS_CONFIG``, else ``./dbops.yaml`` when present). Raises :class:`SettingsError`
    listing every problem."""
    environ = os.environ if env is None else env
    return _Loader(environ, (cwd or Path.cwd()).absolute()).load(config_file)


_current: tuple[tuple, model.Settings] | None = None


def _fingerprint() -> tuple:
    """What this process's settings are read from: the DBOPS_* variables, the working directory and the config file's
    identity. Secrets are references resolved when used, so a changed secret needs no new read."""
    settings_env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("DBOPS_")))
    cwd = Path.cwd()
    config = Path(os.environ.get(CONFIG_ENV) or cwd / "dbops.yaml")
    try:
        stat = config.stat()
        file_id: tuple = (str(config), stat.st_mtime_ns, stat.st_size)
    except OSError:
        file_id = (str(config), None)
    return settings_env, str(cwd), file_id


def current_settings() -> model.Settings:
    """:func:`load_settings` of this process, read again only when a DBOPS_* variable, the working directory or the
    config file changed: building the definitions of many targets asks for them a few times per target."""
    global _current
    key = _fingerprint()
    if _current is None or _current[0] != key:
        _current = (key, load_settings())
    return _current[1]


def _secret_refs(obj: Any, path: str) -> Iterator[tuple[str, model.SecretRef]]:
    if isinstance(obj, model.SecretRef):
        yield path, obj
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            if f.name not in ("sources", "warnings"):
                yield from _secret_refs(getattr(obj, f.name), _join(path, f.name))
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _secret_refs(value, _join(path, str(key)))


def option_values(settings: model.Settings) -> Iterator[tuple[str, Option, Any]]:
    """(dotted key, option, typed value) of every option, globals first, then each target's."""
    for opt in options("global"):
        yield opt.key, opt, _value(settings, opt)
    for name, target in settings.targets.items():
        for opt in options("target"):
            yield f"targets.{name}.{opt.key}", opt, _value(target, opt)


def _value(obj: Any, opt: Option) -> Any:
    if opt.key.startswith("schedules."):
        _, schedule, attr = opt.key.split(".")
        return getattr(obj.schedules[schedule], attr)
    for part in opt.section.split(".") if opt.section else []:
        obj = getattr(obj, part)
    return getattr(obj, opt.attr)


def check_settings(settings: model.Settings) -> list[Problem]:
    """What would fail when a value is used: an unset secret variable, an unreadable key file, a missing folder,
    file or program. Reported by ``dbops config check``; never shows a secret."""
    problems: list[Problem] = []
    for full, opt, value in option_values(settings):
        source = settings.sources.get(full, "default")
        where = None if source == "default" else source
        if isinstance(value, model.SecretRef) and not value.is_set:
            problems.append(Problem(where, full, f"{value.env} is unset",
                                    f"export {value.env} where dbops runs (dbops never reads a secret from the "
                                    f"file), or fix the name"))
        elif isinstance(opt.kind, PathKind) and isinstance(value, Path) and opt.kind.must:
            if opt.key == "backup.key_file" and source == "default":
                continue  # generated on first use on the embedded server
            problem = _path_problem(value, opt.kind.must)
            if problem:
                problems.append(Problem(where, full, problem, f"create it, or point {opt.key}"
                                        + (f" ({opt.env})" if opt.env else "") + " at the right place"))
    return problems


def _path_problem(path: Path, must: str) -> str | None:
    if must == "dir" and not path.is_dir():
        return f"folder {path} does not exist"
    if must == "file" and not path.is_file():
        return f"file {path} does not exist"
    if must == "file" and not os.access(path, os.R_OK):
        return f"file {path} cannot be read"
    if must == "exe" and not (path.is_file() and os.access(path, os.X_OK)):
        return f"{path} is not an executable program"
    return None


