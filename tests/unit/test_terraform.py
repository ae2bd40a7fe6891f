"""Wiring checks of terraform/ that `terraform validate` and checkov cannot make.

The files are parsed with python-hcl2; nothing here needs terraform, a cloud
account or a cluster. The environment the Kubernetes containers get is
checked against the Python source (read with ``ast``): every variable
Terraform sets is one the code reads, and every one production needs is set,
so a rename on either side fails here instead of in a pod.
"""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
MODULES = sorted(path for path in (TERRAFORM / "modules").iterdir() if path.is_dir())
# The one root module; an environment is only its settings and its state:
# environments/NAME.tfvars and environments/NAME.backend.hcl.
ROOT_MODULE = TERRAFORM / "stack"
ENVIRONMENTS = sorted(path.stem for path in (TERRAFORM / "environments").glob("*.tfvars"))
STACKS = [*MODULES, ROOT_MODULE]
TF_FILES = sorted(TERRAFORM.rglob("*.tf"))
TFVARS_FILES = sorted(TERRAFORM.rglob("*.tfvars"))
BACKEND_FILES = sorted(TERRAFORM.rglob("*.backend.hcl"))
BENTOML_PORT = 3000
DIGEST = "sha256:" + "0123456789abcdef" * 4

# Attribute names that hold a credential: their value must never be a literal.
SECRET_KEY = re.compile(
    r"(^|_)(password|passwd|token|secret|secret_key|access_key)$", re.IGNORECASE
)
LOCAL_REF = re.compile(r"^\$\{local\.(\w+)\}$")

# The packages whose code runs in the containers, and the environment variable
# names that count as the code's own (library names like PGPASSWORD are listed
# below instead).
CODE_PACKAGES = ("core", "serving", "features", "training", "feedrank")
CODE_ENV_NAME = re.compile(r"(FEEDRANK|MLFLOW|BENTOML)_[A-Z0-9_]+")
# What the production profile cannot run without: Feast's Redis and registry,
# the API key file, the shared event stream, the profile and the workspace.
REQUIRED_IN_PRODUCTION = frozenset(
    {
        "FEEDRANK_REDIS_URL",
        "FEEDRANK_REGISTRY_URL",
        "FEEDRANK_API_KEYS_FILE",
        "FEEDRANK_EVENT_STREAM_URL",
        "FEEDRANK_FEAST_PROFILE",
        "FEEDRANK_WORKSPACE",
    }
)
# Set by Terraform, read by a library rather than by feedrank's code.
READ_BY_LIBRARIES = {"PGPASSWORD": "libpq, the password of FEEDRANK_REGISTRY_URL"}
# Kubernetes expands $(NAME) in an env value from a variable defined before it.
EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
RANKER = TERRAFORM / "modules" / "ranker"
RAY = TERRAFORM / "modules" / "ray_offline"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
# The project's Ray pin (pyproject.toml: ray[default,data,train]); the image carries it.
RAY_VERSION = "2.58.1"
# KubeRay refuses a RayJob name longer than this (MaxRayJobNameLength: 53 - 6).
KUBERAY_MAX_RAYJOB_NAME = 47
# Set in the Ray containers, read by Ray or Python rather than by feedrank's code.
READ_BY_RAY = {
    "PGPASSWORD": "libpq, the password of FEEDRANK_REGISTRY_URL",
    "PYTHONPATH": "Python in the driver and every Ray worker: feedrank's source",
    "RAY_USAGE_STATS_ENABLED": "Ray: no usage reports from the cluster",
}
# What the cluster profile needs in the pods: Feast's Redis and SQL registry.
REQUIRED_ON_RAY = frozenset({"FEEDRANK_REDIS_URL", "FEEDRANK_REGISTRY_URL"})
RAY_ENV_RULES = (READ_BY_RAY, (REQUIRED_ON_RAY, "needed by the cluster profile"))
"""env_mismatches' rules for the Ray containers."""


OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)


@cache
def parse(path: Path) -> dict[str, Any]:
    """One .tf or .tfvars file as python-hcl2 sees it, string quotes stripped."""
    with path.open(encoding="utf-8") as handle:
        return hcl2.load(handle, serialization_options=OPTIONS)


def stack(directory: Path) -> dict[str, list[Any]]:
    """Every top-level block of a module or environment, all its .tf files merged."""
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, blocks in parse(path).items():
            merged.setdefault(kind, []).extend(blocks)
    return merged


def named(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """[{name: body}, ...] -> {name: body}."""
    return {name: body for block in blocks for name, body in block.items()}


def resources(directory: Path, resource_type: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for block in stack(directory).get("resource", []):
        found.update(block.get(resource_type, {}))
    return found


def local_values(directory: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for block in stack(directory).get("locals", []):
        values.update(block)
    return values


def resolve(value: Any, locals_: dict[str, Any]) -> Any:
    """Follow `${local.NAME}` references; any other value is returned as it is."""
    while isinstance(value, str) and (match := LOCAL_REF.match(value)):
        value = locals_[match.group(1)]
    return value


def one(blocks: list[Any]) -> Any:
    assert len(blocks) == 1, f"expected one block, found {len(blocks)}"
    return blocks[0]


def pod_container(directory: Path, deployment: str) -> dict[str, Any]:
    """The one container of a kubernetes_deployment_v1 in `directory`."""
    body = resources(directory, "kubernetes_deployment_v1")[deployment]
    return one(one(one(one(body["spec"])["template"])["spec"])["container"])


@dataclass(frozen=True)
class EnvVar:
    """One entry of a container's env: a literal value or a secretKeyRef key."""

    value: str | None
    secret_key: str | None
    position: int


def container_env(directory: Path, container: dict[str, Any]) -> dict[str, EnvVar]:
    """A container's env by name, with `dynamic "env"` blocks over a local map expanded.

    Terraform iterates a map in key order, which is also the order Kubernetes
    sees; a container uses either literal env blocks or dynamic ones, so the
    order of the entries (for $(NAME) expansion) is known.
    """
    literal, dynamic = container.get("env", []), container.get("dynamic", [])
    assert not (literal and dynamic), "mix of literal and dynamic env blocks: order unknown"
    entries: list[tuple[str, Any, Any]] = []
    for item in literal:
        ref = (
            one(one(item["value_from"])["secret_key_ref"])["key"] if "value_from" in item else None
        )
        entries.append((item["name"], item.get("value"), ref))
    locals_ = local_values(directory)
    for block in dynamic:
        if "env" not in block:
            continue
        match = LOCAL_REF.match(block["env"]["for_each"])
        assert match, f"dynamic env over {block['env']['for_each']}: only a local map is read"
        content = one(block["env"]["content"])
        for key, value in sorted(locals_[match.group(1)].items()):
            bound = {"${env.key}": key, "${env.value}": value}
            ref = None
            if "value_from" in content:
                ref = one(one(content["value_from"])["secret_key_ref"])["key"]
                ref = bound.get(ref, ref)
            entries.append((bound[content["name"]], bound.get(content.get("value")), ref))
    env: dict[str, EnvVar] = {}
    for position, (name, value, ref) in enumerate(entries):
        assert name not in env, f"{name} set twice"
        env[name] = EnvVar(value, ref, position)
    return env


def names_read_by_code(root: Path = ROOT, packages: tuple[str, ...] = CODE_PACKAGES) -> set[str]:
    """Every string literal in the packages' code that is a FEEDRANK_/MLFLOW_/BENTOML_ name.

    Read with `ast`, so a name only mentioned in a comment or inside a docstring
    sentence does not count; a constant like ``KEYS_FILE_ENV = "FEEDRANK_..."``
    or ``os.environ.get("MLFLOW_...")`` does.
    """
    found: set[str] = set()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            found.update(
                node.value
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and CODE_ENV_NAME.fullmatch(node.value)
            )
    return found


def env_mismatches(
    env: dict[str, EnvVar],
    read: set[str],
    read_elsewhere: dict[str, str] | None = None,
    required: tuple[AbstractSet[str], str] | None = None,
) -> list[str]:
    """What is wrong between what a container is given and what the code reads.

    ``read_elsewhere``: names read by libraries rather than the code (default: the
    ranker's); ``required``: names that must be set, and why (default: the ranker's).
    """
    read_elsewhere = READ_BY_LIBRARIES if read_elsewhere is None else read_elsewhere
    needed, why = required or (REQUIRED_IN_PRODUCTION, "required in production")
    expanded = {
        target: name for name, item in env.items() for target in EXPANSION.findall(item.value or "")
    }
    problems = [
        f"{name}: set by Terraform, read by no code"
        for name in sorted(env)
        if name not in read and name not in read_elsewhere and name not in expanded
    ]
    problems += [f"{name}: {why}, not set by Terraform" for name in sorted(needed - set(env))]
    problems += [
        f"{user}: expands $({target}), which is not set before it"
        for target, user in sorted(expanded.items())
        if target not in env or env[target].position > env[user].position
    ]
    return problems


def feedrank_deployments() -> list[str]:
    """The Deployments that run feedrank's image (all of the ranker module's)."""
    return sorted(resources(RANKER, "kubernetes_deployment_v1"))


REPLICA_BOUNDED = [path for path in STACKS if "max_replicas" in named(stack(path)["variable"])]


def tfvars(environment: str) -> dict[str, Any]:
    return parse(TERRAFORM / "environments" / f"{environment}.tfvars")


def walk(node: Any, path: str = ""):
    """Yield (dotted path, key, value) for every attribute in a parsed file."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}[{index}]")


def without_variable_blocks(source: str) -> str:
    """The source with every `variable "NAME" { ... }` block cut out (braces in strings ignored)."""
    kept, index = [], 0
    for match in re.finditer(r'^variable\s+"[^"]+"\s*\{', source, flags=re.MULTILINE):
        if match.start() < index:
            continue
        kept.append(source[index : match.start()])
        depth, position, in_string = 0, match.end() - 1, False
        while True:
            char = source[position]
            if in_string:
                if char == "\\":
                    position += 1
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    break
            position += 1
        index = position + 1
    kept.append(source[index:])
    return "".join(kept)


def check_condition(condition: str, variable: str, value: str) -> bool:
    """Evaluate the few validation forms used here for one string value.

    Supported: `A && B`, `can(regex("P", var.X))`, `!can(regex(...))` and
    `length(trimspace(var.X)) > 0`. Anything else fails the test that asked,
    so a new form gets a deliberate decision instead of passing unchecked.
    """
    body = condition.removeprefix("${").removesuffix("}")
    results = []
    for term in (part.strip() for part in body.split("&&")):
        negate = term.startswith("!")
        term = term.removeprefix("!")
        if match := re.fullmatch(rf'can\(regex\("(.*)", var\.{variable}\)\)', term):
            result = re.search(match.group(1).replace('\\"', '"'), value) is not None
        elif term == f"length(trimspace(var.{variable})) > 0":
            result = len(value.strip()) > 0
        else:
            raise AssertionError(f"unsupported validation term for var.{variable}: {term}")
        results.append(result != negate)
    return all(results)


def accepts(directory: Path, variable: str, value: str) -> bool:
    """Whether every validation block of `variable` in `directory` accepts `value`."""
    declaration = named(stack(directory)["variable"])[variable]
    validations = declaration.get("validation", [])
    assert validations, f"var.{variable} in {directory.name} has no validation block"
    return all(check_condition(rule["condition"], variable, value) for rule in validations)


@pytest.mark.parametrize(
    "path", TF_FILES + TFVARS_FILES + BACKEND_FILES, ids=lambda p: str(p.relative_to(TERRAFORM))
)
def test_every_file_parses_to_blocks(path: Path) -> None:
    parsed = parse(path)
    assert parsed, f"{path} parsed to nothing"


def test_both_environments_and_all_modules_exist() -> None:
    assert ENVIRONMENTS == ["production", "staging"]
    assert {
        "ranker",
        "online_store",
        "event_stream",
        "mlflow",
        "feast_registry",
        "ray_offline",
    } <= {path.name for path in MODULES}


def test_root_module_calls_the_modules_by_relative_path() -> None:
    calls = named(stack(ROOT_MODULE)["module"])
    assert set(calls) == {
        "ranker",
        "online_store",
        "event_stream",
        "mlflow",
        "feast_registry",
        "ray_offline",
    }
    for name, call in calls.items():
        assert call["source"] == f"../modules/{name}"
        assert (ROOT_MODULE / call["source"]).resolve() in MODULES


def test_ranker_container_listens_on_bentoml_port() -> None:
    ranker = TERRAFORM / "modules" / "ranker"
    locals_ = local_values(ranker)
    deployment = resources(ranker, "kubernetes_deployment_v1")["ranker"]
    container = one(one(one(one(deployment["spec"])["template"])["spec"])["container"])
    port = one(container["port"])
    assert resolve(port["container_port"], locals_) == BENTOML_PORT


@pytest.mark.parametrize(
    ("probe", "path"), [("readiness_probe", "/readyz"), ("liveness_probe", "/livez")]
)
def test_ranker_probes_hit_bentoml_health_endpoints_on_the_container_port(
    probe: str, path: str
) -> None:
    ranker = TERRAFORM / "modules" / "ranker"
    locals_ = local_values(ranker)
    deployment = resources(ranker, "kubernetes_deployment_v1")["ranker"]
    container = one(one(one(one(deployment["spec"])["template"])["spec"])["container"])
    http_get = one(one(container[probe])["http_get"])
    assert http_get["path"] == path
    assert resolve(http_get["port"], locals_) == resolve(
        one(container["port"])["container_port"], locals_
    )


def test_ranker_service_targets_the_container_port() -> None:
    ranker = TERRAFORM / "modules" / "ranker"
    locals_ = local_values(ranker)
    deployment = resources(ranker, "kubernetes_deployment_v1")["ranker"]
    container = one(one(one(one(deployment["spec"])["template"])["spec"])["container"])
    service_port = one(one(resources(ranker, "kubernetes_service_v1")["ranker"]["spec"])["port"])
    container_port = resolve(one(container["port"])["container_port"], locals_)
    assert resolve(service_port["target_port"], locals_) == container_port == BENTOML_PORT
    assert service_port["port"] == 80


@pytest.mark.parametrize("name", ["ranker", "event_consumer"])
def test_ranker_container_is_locked_down(name: str) -> None:
    ranker = TERRAFORM / "modules" / "ranker"
    deployment = resources(ranker, "kubernetes_deployment_v1")[name]
    pod = one(one(one(deployment["spec"])["template"])["spec"])
    context = one(one(pod["container"])["security_context"])
    assert context["run_as_non_root"] is True
    assert context["read_only_root_filesystem"] is True
    assert context["allow_privilege_escalation"] is False
    assert one(context["capabilities"])["drop"] == ["ALL"]


def test_ranker_secrets_come_from_secret_refs_only() -> None:
    """Tokens and passwords come from the ExternalSecret's keys, never from the spec."""
    for deployment in ("ranker", "event_consumer"):
        env = container_env(RANKER, pod_container(RANKER, deployment))
        for name in ("FEEDRANK_REDIS_PASSWORD", "FEEDRANK_EVENT_STREAM_PASSWORD", "PGPASSWORD"):
            assert env[name].secret_key, f"{name} must come from a secretKeyRef"
            assert env[name].value is None, f"{name} must not carry a value in the spec"
        assert env["MLFLOW_TRACKING_URI"].value == "${var.mlflow_tracking_uri}"
    # Every secret key the containers name is one the ExternalSecret fills.
    external = resources(RANKER, "kubernetes_manifest")["runtime_secret"]["manifest"]
    synced = {item["secretKey"] for item in external["spec"]["data"]}
    env = container_env(RANKER, pod_container(RANKER, "ranker"))
    assert {item.secret_key for item in env.values() if item.secret_key} == synced


def test_ranker_autoscaler_and_budget_are_wired_to_the_deployment() -> None:
    ranker = TERRAFORM / "modules" / "ranker"
    hpa = one(resources(ranker, "kubernetes_horizontal_pod_autoscaler_v2")["ranker"]["spec"])
    assert hpa["min_replicas"] == "${var.min_replicas}"
    assert hpa["max_replicas"] == "${var.max_replicas}"
    assert (
        one(hpa["scale_target_ref"])["name"]
        == "${kubernetes_deployment_v1.ranker.metadata[0].name}"
    )
    assert one(one(hpa["metric"])["resource"])["name"] == "cpu"
    pdb = one(resources(ranker, "kubernetes_pod_disruption_budget_v1")["ranker"]["spec"])
    deployment = one(resources(ranker, "kubernetes_deployment_v1")["ranker"]["spec"])
    assert one(pdb["selector"])["match_labels"] == one(deployment["selector"])["match_labels"]


@pytest.mark.parametrize("directory", STACKS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_declared_variable_is_referenced(directory: Path) -> None:
    declared = named(stack(directory)["variable"])
    # Only text outside the variable blocks counts: a validation that names its
    # own variable is not a use of it.
    text = "\n".join(
        without_variable_blocks(path.read_text(encoding="utf-8"))
        for path in sorted(directory.glob("*.tf"))
    )
    unused = sorted(name for name in declared if not re.search(rf"\bvar\.{name}\b", text))
    assert not unused, f"declared but never used in {directory.name}: {unused}"


def test_without_variable_blocks_keeps_everything_else() -> None:
    source = 'variable "a" {\n  default = "}{"\n}\nlocals {\n  b = var.a\n}\n'
    assert without_variable_blocks(source) == "\nlocals {\n  b = var.a\n}\n"


@pytest.mark.parametrize("directory", STACKS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_every_variable_has_a_description(directory: Path) -> None:
    declared = named(stack(directory)["variable"])
    missing = sorted(
        name for name, body in declared.items() if not str(body.get("description", "")).strip()
    )
    assert not missing, f"variables without a description in {directory.name}: {missing}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_tfvars_set_only_declared_variables_and_every_required_one_but_the_digest(
    environment: str,
) -> None:
    declared = named(stack(ROOT_MODULE)["variable"])
    values = tfvars(environment)
    assert set(values) <= set(declared), (
        f"undeclared in tfvars: {sorted(set(values) - set(declared))}"
    )
    required = {name for name, body in declared.items() if "default" not in body}
    # CD supplies the image digest per deploy (-var image_digest=...) and the API
    # key file from a secret (TF_VAR_api_keys_yaml): neither is in a tfvars file.
    assert required - set(values) == {"image_digest", "api_keys_yaml"}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_sets_the_ranker_image(environment: str) -> None:
    ranker = named(stack(ROOT_MODULE)["module"])["ranker"]
    assert ranker["image"] == "${var.image_repository}@${var.image_digest}"
    repository = tfvars(environment)["image_repository"]
    assert repository.strip(), "image_repository is empty"
    assert accepts(ROOT_MODULE, "image_repository", repository)
    assert accepts(ROOT_MODULE, "image_digest", DIGEST)
    assert accepts(TERRAFORM / "modules" / "ranker", "image", f"{repository}@{DIGEST}")


@pytest.mark.parametrize(
    "image",
    [
        "",
        "ghcr.io/feedrank/feedrank",
        "ghcr.io/feedrank/feedrank:latest",
        f"ghcr.io/feedrank/feedrank:latest@{DIGEST}",
        "ghcr.io/feedrank/feedrank:0123abc",
        "ghcr.io/feedrank/feedrank@sha256:1234",
    ],
)
def test_ranker_image_validation_rejects_mutable_or_empty_images(image: str) -> None:
    assert not accepts(TERRAFORM / "modules" / "ranker", "image", image)


@pytest.mark.parametrize(
    "repository", ["", "ghcr.io/feedrank/feedrank:latest", f"ghcr.io/feedrank/feedrank@{DIGEST}"]
)
def test_environment_image_repository_validation_rejects_tags_and_empty(repository: str) -> None:
    assert not accepts(ROOT_MODULE, "image_repository", repository)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_hpa_min_replicas_not_above_max_in_tfvars(environment: str) -> None:
    values = tfvars(environment)
    assert 1 <= values["min_replicas"] <= values["max_replicas"]
    ranker = named(stack(ROOT_MODULE)["module"])["ranker"]
    assert ranker["min_replicas"] == "${var.min_replicas}"
    assert ranker["max_replicas"] == "${var.max_replicas}"


def test_replica_bounds_are_declared_by_the_ranker_and_the_root_module() -> None:
    assert set(REPLICA_BOUNDED) == {TERRAFORM / "modules" / "ranker", ROOT_MODULE}


@pytest.mark.parametrize("directory", REPLICA_BOUNDED, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_max_replicas_validation_compares_with_min(directory: Path) -> None:
    declared = named(stack(directory)["variable"])
    conditions = [rule["condition"] for rule in declared["max_replicas"]["validation"]]
    assert "${var.max_replicas >= var.min_replicas}" in conditions


@pytest.mark.parametrize(
    "path", TF_FILES + TFVARS_FILES + BACKEND_FILES, ids=lambda p: str(p.relative_to(TERRAFORM))
)
def test_no_hard_coded_secrets(path: Path) -> None:
    literal = [
        where
        for where, key, value in walk(parse(path))
        if SECRET_KEY.search(str(key)) and isinstance(value, str) and "${" not in value
    ]
    assert not literal, f"literal credential values in {path.name}: {literal}"
    text = path.read_text(encoding="utf-8")
    assert not re.search(r'\b(password|auth_token|access_key|secret_key)\s*=\s*"(?!\$\{)', text)


def test_remote_state_is_a_partial_s3_backend() -> None:
    terraform = one(stack(ROOT_MODULE)["terraform"])
    backend = one(terraform["backend"])
    assert list(backend) == ["s3"]
    # bucket, key, region and the lock table come from -backend-config at init.
    assert set(backend["s3"]) == {"encrypt"}
    assert backend["s3"]["encrypt"] is True


def test_every_environment_keeps_its_own_state() -> None:
    """NAME.backend.hcl gives the state key only; bucket, region, lock table are per account."""
    keys = {}
    for environment in ENVIRONMENTS:
        config = parse(TERRAFORM / "environments" / f"{environment}.backend.hcl")
        assert set(config) == {"key"}, environment
        keys[environment] = config["key"]
    assert keys == {name: f"feedrank/{name}.tfstate" for name in ENVIRONMENTS}


@pytest.mark.parametrize("directory", STACKS, ids=lambda p: str(p.relative_to(TERRAFORM)))
def test_terraform_and_provider_versions_are_bounded(directory: Path) -> None:
    terraform = one(stack(directory)["terraform"])
    assert ">=" in terraform["required_version"] and "<" in terraform["required_version"].replace(
        "<=", ""
    )
    providers = one(terraform["required_providers"])
    assert providers, "no required_providers"
    for name, spec in providers.items():
        assert spec["source"].startswith("hashicorp/"), name
        assert ">=" in spec["version"] and "< " in spec["version"], (
            f"{name} version not bounded: {spec['version']}"
        )


def test_environments_differ_only_in_their_variable_files() -> None:
    """One root module: no .tf outside stack/ and modules/, environments/ holds only settings."""
    assert {path.name for path in TERRAFORM.iterdir()} == {"environments", "modules", "stack"}
    for path in TF_FILES:
        assert path.parent == ROOT_MODULE or path.parent in MODULES, path
    files = sorted(path.name for path in (TERRAFORM / "environments").iterdir())
    assert files == sorted(
        f"{name}{suffix}" for name in ENVIRONMENTS for suffix in (".tfvars", ".backend.hcl")
    )
    # A terraform.tfvars in stack/ would be loaded for every environment alike.
    assert all(path.parent == TERRAFORM / "environments" for path in TFVARS_FILES)
    # Both set the same variables, with their own values.
    assert set(tfvars("staging")) == set(tfvars("production"))
    for name in ENVIRONMENTS:
        assert tfvars(name)["environment"] == name


def test_production_runs_managed_redis_and_several_ranker_pods() -> None:
    values = tfvars("production")
    assert values["online_store_mode"] == "managed"
    assert values["min_replicas"] >= 2
    assert values["redis_num_cache_clusters"] >= 2


def test_managed_redis_is_encrypted_multi_az_with_a_secret_token() -> None:
    online_store = TERRAFORM / "modules" / "online_store"
    group = resources(online_store, "aws_elasticache_replication_group")["redis"]
    for flag in (
        "at_rest_encryption_enabled",
        "transit_encryption_enabled",
        "multi_az_enabled",
        "automatic_failover_enabled",
    ):
        assert group[flag] is True, flag
    assert group["auth_token"].startswith("${data.aws_secretsmanager_secret_version.auth_token")


def test_mlflow_database_is_private_encrypted_and_manages_its_password() -> None:
    mlflow = TERRAFORM / "modules" / "mlflow"
    database = resources(mlflow, "aws_db_instance")["mlflow"]
    assert database["publicly_accessible"] is False
    assert database["storage_encrypted"] is True
    assert database["deletion_protection"] is True
    assert database["manage_master_user_password"] is True
    assert database["iam_database_authentication_enabled"] is True
    assert "password" not in database


def test_feast_registry_url_carries_no_password() -> None:
    registry = TERRAFORM / "modules" / "feast_registry"
    url = named(stack(registry)["output"])["registry_url"]["value"]
    assert url.startswith("postgresql+psycopg://${var.database}@")
    assert ":${" not in url.split("@")[0], "the user part of the URL must not hold a password"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_environment_names_fit_the_mlflow_name_limits(environment: str) -> None:
    """S3 bucket prefixes and IAM role name prefixes are short; production's name must fit."""
    call = named(stack(ROOT_MODULE)["module"])["mlflow"]
    assert call["name"] == "${local.name}-mlflow"
    assert local_values(ROOT_MODULE)["name"] == "feedrank-${var.environment}"
    name = f"feedrank-{tfvars(environment)['environment']}-mlflow"
    assert accepts(TERRAFORM / "modules" / "mlflow", "name", name)


# ------------------------------------------------- environment vs the code


@pytest.mark.parametrize("deployment", feedrank_deployments())
def test_container_env_matches_the_names_the_code_reads(deployment: str) -> None:
    """Every name set is read by the code; every name production needs is set."""
    env = container_env(RANKER, pod_container(RANKER, deployment))
    assert env_mismatches(env, names_read_by_code()) == []


def test_both_feedrank_deployments_get_the_same_environment() -> None:
    """The consumer and the ranker read the same settings."""
    assert feedrank_deployments() == ["event_consumer", "ranker"]
    envs = [container_env(RANKER, pod_container(RANKER, name)) for name in feedrank_deployments()]
    assert envs[0] == envs[1]


def test_a_renamed_variable_on_either_side_is_a_mismatch() -> None:
    """The check fails on a rename in Terraform, in the code, or a broken $(NAME)."""
    env = container_env(RANKER, pod_container(RANKER, "ranker"))
    read = names_read_by_code()
    # Terraform renames one: it sets a name nobody reads, and misses a required one.
    renamed = {
        ("FEEDRANK_REDIS_ADDRESS" if name == "FEEDRANK_REDIS_URL" else name): item
        for name, item in env.items()
    }
    assert env_mismatches(renamed, read) == [
        "FEEDRANK_REDIS_ADDRESS: set by Terraform, read by no code",
        "FEEDRANK_REDIS_URL: required in production, not set by Terraform",
    ]
    # The code renames one: what Terraform still sets is read by nobody.
    assert env_mismatches(env, (read - {"FEEDRANK_RATE_LIMIT"}) | {"FEEDRANK_RATE_LIMITS"}) == [
        "FEEDRANK_RATE_LIMIT: set by Terraform, read by no code"
    ]
    # A password only expanded into a URL is used; a URL expanding a missing one is not.
    broken = {name: item for name, item in env.items() if name != "FEEDRANK_REDIS_PASSWORD"}
    problems = env_mismatches(broken, read)
    assert "FEEDRANK_REDIS_URL: expands $(FEEDRANK_REDIS_PASSWORD), which is not set before it" in (
        problems
    )


def test_the_old_names_are_gone() -> None:
    """Names no code reads (issue 17) stay out of terraform/."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in TF_FILES)
    for stale in ("FEEDRANK_ONLINE_STORE_CONNECTION_STRING", "FEEDRANK_MODEL_VERSION"):
        assert stale not in text


def test_names_read_by_code_counts_literals_not_prose(tmp_path: Path) -> None:
    """String constants count; comments and docstring prose do not."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text(
        '"""Reads ``FEEDRANK_IN_DOCSTRING`` from the environment."""\n'
        "import os\n"
        "# FEEDRANK_IN_COMMENT\n"
        'URL_ENV = "FEEDRANK_SOME_URL"\n'
        'TRACKING = os.environ.get("MLFLOW_TRACKING_URI")\n'
        'PREFIX = f"FEEDRANK_{URL_ENV}"\n',
        encoding="utf-8",
    )
    assert names_read_by_code(tmp_path, ("pkg",)) == {"FEEDRANK_SOME_URL", "MLFLOW_TRACKING_URI"}


def test_no_other_module_sets_feedrank_variables() -> None:
    """Only the ranker module and the Ray cluster run feedrank's image (the Ray env: below)."""
    for directory in MODULES:
        if directory in (RANKER, RAY):
            continue
        names = {
            value
            for _, key, value in walk(stack(directory))
            if key == "name" and isinstance(value, str) and CODE_ENV_NAME.fullmatch(value)
        }
        assert not names, f"{directory.name} sets {sorted(names)}"


def test_deploy_doc_lists_exactly_the_container_environment() -> None:
    """docs/deploy.md's table lists what the pods get, no more, no less."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text.split("### What the ranker pods get", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, flags=re.MULTILINE))
    env = container_env(RANKER, pod_container(RANKER, "ranker"))
    assert documented == set(env)


# ------------------------------------------------------------- the modules


def test_feast_redis_url_carries_the_secret_password_and_tls() -> None:
    """Feast's connection string: password from the secret, ssl from the store."""
    env = container_env(RANKER, pod_container(RANKER, "ranker"))
    assert env["FEEDRANK_REDIS_URL"].value == (
        "${var.redis.host}:${var.redis.port},ssl=${var.redis.tls},"
        "password=$(FEEDRANK_REDIS_PASSWORD)"
    )
    call = named(stack(ROOT_MODULE)["module"])["ranker"]
    assert call["redis"] == {
        "host": "${module.online_store.host}",
        "port": "${module.online_store.port}",
        "tls": "${module.online_store.tls}",
    }
    # Managed Redis speaks TLS; the output the ranker gets says so.
    online_store = TERRAFORM / "modules" / "online_store"
    assert named(stack(online_store)["output"])["tls"]["value"] == "${local.managed}"


def test_event_stream_url_is_a_redis_url_with_the_stream_password() -> None:
    """The stream URL: rediss when managed, the stream's own token."""
    env = container_env(RANKER, pod_container(RANKER, "ranker"))
    assert env["FEEDRANK_EVENT_STREAM_URL"].value == (
        "${local.stream_scheme}://:$(FEEDRANK_EVENT_STREAM_PASSWORD)"
        "@${var.event_stream.host}:${var.event_stream.port}/0"
    )
    assert local_values(RANKER)["stream_scheme"] == '${var.event_stream.tls ? "rediss" : "redis"}'
    call = named(stack(ROOT_MODULE)["module"])["ranker"]
    assert (
        call["event_stream_password_remote_key"] == "${module.event_stream.auth_token_secret_name}"
    )
    assert env["FEEDRANK_FEAST_PROFILE"].value == "production"
    assert env["FEEDRANK_AUTH"].value == "required"


def test_api_keys_are_a_secret_from_a_sensitive_variable_mounted_where_the_env_points() -> None:
    """The key file: a Secret from a sensitive variable, at FEEDRANK_API_KEYS_FILE."""
    secret = resources(RANKER, "kubernetes_secret_v1")["api_keys"]
    locals_ = local_values(RANKER)
    assert secret["data"] == {"${(local.api_keys_file)}": "${var.api_keys_yaml}"}
    for directory in (RANKER, ROOT_MODULE):
        variable = named(stack(directory)["variable"])["api_keys_yaml"]
        assert variable["sensitive"] is True
        assert "default" not in variable, "no key material may ship as a default"
    assert named(stack(ROOT_MODULE)["module"])["ranker"]["api_keys_yaml"] == "${var.api_keys_yaml}"
    for deployment in feedrank_deployments():
        body = resources(RANKER, "kubernetes_deployment_v1")[deployment]
        pod = one(one(one(body["spec"])["template"])["spec"])
        volumes = {volume["name"]: volume for volume in pod["volume"]}
        mounts = {
            mount["name"]: mount for mount in pod_container(RANKER, deployment)["volume_mount"]
        }
        assert one(volumes["api-keys"]["secret"])["secret_name"] == (
            "${kubernetes_secret_v1.api_keys.metadata[0].name}"
        )
        assert mounts["api-keys"]["read_only"] is True
        mount_path = resolve(mounts["api-keys"]["mount_path"], locals_)
        env = container_env(RANKER, pod_container(RANKER, deployment))
        keys_file = env["FEEDRANK_API_KEYS_FILE"].value
        assert keys_file == "${local.api_keys_dir}/${local.api_keys_file}"
        assert f"{mount_path}/{locals_['api_keys_file']}" == "/etc/feedrank/api-keys/api_keys.yaml"


def test_event_consumer_runs_the_consume_command_on_the_production_profile() -> None:
    """Its own Deployment running `feedrank events consume` on production."""
    container = pod_container(RANKER, "event_consumer")
    locals_ = local_values(RANKER)
    command = [resolve(part, locals_) for part in container["command"]]
    assert command[:3] == ["python", "-c", "from feedrank.cli import main; main()"]
    assert command[3:] == [
        "events",
        "consume",
        "--workspace",
        "/home/bentoml/bento/src",
        "--profile",
        "production",
    ]
    assert container["image"] == "${var.image}"
    spec = one(resources(RANKER, "kubernetes_deployment_v1")["event_consumer"]["spec"])
    assert spec["replicas"] == "${var.consumer_replicas}"
    assert named(stack(RANKER)["variable"])["consumer_replicas"]["validation"]
    ranker_selector = one(
        one(resources(RANKER, "kubernetes_deployment_v1")["ranker"]["spec"])["selector"]
    )["match_labels"]
    # Its own pods: the ranker's Service, HPA and PDB must not select them.
    assert one(spec["selector"])["match_labels"] == "${local.consumer_selector}"
    assert ranker_selector == "${local.selector}"


def test_managed_event_stream_is_encrypted_authenticated_multi_az_and_never_evicts() -> None:
    """ElastiCache: TLS, AUTH, KMS, Multi-AZ, noeviction (no AOF there)."""
    module = TERRAFORM / "modules" / "event_stream"
    group = resources(module, "aws_elasticache_replication_group")["stream"]
    for flag in (
        "at_rest_encryption_enabled",
        "transit_encryption_enabled",
        "multi_az_enabled",
        "automatic_failover_enabled",
    ):
        assert group[flag] is True, flag
    assert group["auth_token"].startswith("${data.aws_secretsmanager_secret_version.auth_token")
    assert group["parameter_group_name"] == "${aws_elasticache_parameter_group.stream[0].name}"
    parameters = resources(module, "aws_elasticache_parameter_group")["stream"]["parameter"]
    assert {item["name"]: item["value"] for item in parameters} == {
        "maxmemory-policy": "noeviction"
    }
    assert named(stack(module)["variable"])["num_cache_clusters"]["validation"]


def test_in_cluster_event_stream_writes_an_aof_on_a_persistent_volume() -> None:
    """In-cluster: AOF with appendfsync on a PersistentVolumeClaim."""
    module = TERRAFORM / "modules" / "event_stream"
    manifest = resources(module, "kubernetes_manifest")["stream_config"]["manifest"]
    config = manifest["spec"]["target"]["template"]["data"]["redis.conf"]
    for line in (
        '"appendonly yes"',
        '"appendfsync ${var.appendfsync}"',
        '"maxmemory-policy noeviction"',
    ):
        assert line in config
    # serving/event_stream.py acknowledges after the AOF write; always fsyncs it first.
    assert named(stack(module)["variable"])["appendfsync"]["default"] == "always"
    pod = one(
        one(one(resources(module, "kubernetes_deployment_v1")["stream"]["spec"])["template"])[
            "spec"
        ]
    )
    data = {volume["name"]: volume for volume in pod["volume"]}["data"]
    assert one(data["persistent_volume_claim"])["claim_name"] == (
        "${kubernetes_persistent_volume_claim_v1.stream[0].metadata[0].name}"
    )


@pytest.mark.parametrize(
    ("limit", "valid"),
    [
        ("100/second", True),
        ("6000 per minute", True),
        ("10/hours", True),
        ("fast", False),
        ("", False),
    ],
)
def test_rate_limit_validation_takes_the_limits_notation(limit: str, valid: bool) -> None:
    """var.rate_limit refuses at plan time what serving/auth.py would refuse at start."""
    assert accepts(RANKER, "rate_limit", limit) is valid


@pytest.mark.parametrize(
    ("share", "valid"),
    [("0", True), ("0.05", True), ("1", True), ("1.0", True), ("1.5", False), ("-0.1", False)],
)
def test_explore_share_validation_takes_a_share(share: str, valid: bool) -> None:
    """var.explore_share refuses at plan time what ServingConfig would refuse at start."""
    assert accepts(RANKER, "explore_share", share) is valid
    assert accepts(ROOT_MODULE, "explore_share", share) is valid


# ------------------------------------------------- the offline path on KubeRay


def ray_manifest(name: str) -> dict[str, Any]:
    """The manifest of one kubernetes_manifest of the ray_offline module."""
    return resources(RAY, "kubernetes_manifest")[name]["manifest"]


def expand_locals(value: Any, locals_: dict[str, Any]) -> Any:
    """`resolve`, then every `${local.NAME}` inside a string replaced by its string value."""
    value = resolve(value, locals_)
    while isinstance(value, str) and (match := re.search(r"\$\{local\.(\w+)\}", value)):
        value = value.replace(match.group(0), str(resolve(locals_[match.group(1)], locals_)))
    return value


def ray_pods() -> dict[str, dict[str, Any]]:
    """The pod specs: the RayCluster's head and worker group, the RayJob's submitter."""
    cluster = ray_manifest("cluster")["spec"]
    job = ray_manifest("foundation_job")["spec"]
    return {
        "head": cluster["headGroupSpec"]["template"]["spec"],
        "worker": one(cluster["workerGroupSpecs"])["template"]["spec"],
        "submitter": job["submitterPodTemplate"]["spec"],
    }


def ray_env() -> dict[str, EnvVar]:
    """The Ray containers' environment (local.ray_env) by name, in its order."""
    env: dict[str, EnvVar] = {}
    for position, item in enumerate(local_values(RAY)["ray_env"]):
        assert item["name"] not in env, f"{item['name']} set twice"
        ref = item.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
        env[item["name"]] = EnvVar(item.get("value"), ref, position)
    return env


def test_ray_job_runs_the_foundation_pipeline_on_the_cluster_profile() -> None:
    """The entrypoint is `feedrank pipeline foundation --preset demo --profile cluster`."""
    locals_ = local_values(RAY)
    entrypoint = expand_locals(ray_manifest("foundation_job")["spec"]["entrypoint"], locals_)
    argv = shlex.split(entrypoint)
    # As the event consumer: the bento has feedrank's source, not its console script.
    assert argv[:3] == ["python", "-c", "from feedrank.cli import main; main()"]
    assert argv[3:] == [
        "pipeline",
        "foundation",
        "--workspace",
        local_values(RANKER)["workspace"],
        "--preset",
        "demo",
        "--profile",
        "cluster",
    ]
    # Every word is one the CLI takes: the command, its options and their values.
    from feedrank.cli import main  # pylint: disable=import-outside-toplevel

    command = main.commands[argv[3]].commands[argv[4]]
    options = {opt: param for param in command.params for opt in param.opts}
    assert "demo" in options["--preset"].type.choices
    assert "cluster" in options["--profile"].type.choices
    assert {"--workspace", "--preset", "--profile"} <= set(options)


def test_ray_job_runs_on_the_existing_cluster_by_selector_and_never_retries() -> None:
    """clusterSelector, no rayClusterSpec; KubeRay's rules for that mode hold."""
    job = ray_manifest("foundation_job")
    spec = job["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": "${var.name}"}
    assert ray_manifest("cluster")["metadata"]["name"] == "${var.name}"
    assert "rayClusterSpec" not in spec
    assert job["apiVersion"] == ray_manifest("cluster")["apiVersion"] == "ray.io/v1"
    # KubeRay: backoffLimit > 0 is refused with clusterSelector, and a TTL needs
    # shutdownAfterJobFinishes; the shared cluster must outlive the job anyway.
    assert spec["backoffLimit"] == 0
    assert spec["shutdownAfterJobFinishes"] is False
    assert spec["ttlSecondsAfterFinished"] == 0
    assert "suspend" not in spec
    assert spec["activeDeadlineSeconds"] == "${var.job_active_deadline_seconds}"
    deadline = named(stack(RAY)["variable"])["job_active_deadline_seconds"]
    assert deadline["default"] > 0
    assert "${var.job_active_deadline_seconds > 0}" in [
        rule["condition"] for rule in deadline["validation"]
    ]
    assert spec["submissionMode"] == "K8sJobMode"
    assert one(spec["submitterPodTemplate"]["spec"]["containers"])["image"] == "${var.image}"
    assert spec["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"


def test_ray_job_name_fits_kuberay_limit() -> None:
    """The longest name var.name accepts still leaves NAME-foundation within 47 characters."""
    locals_ = local_values(RAY)
    assert locals_["job_name"] == "${var.name}-foundation"
    assert ray_manifest("foundation_job")["metadata"]["name"] == "${local.job_name}"
    longest = "a" * 36
    assert accepts(RAY, "name", longest)
    assert not accepts(RAY, "name", longest + "a")
    assert len(f"{longest}-foundation") <= KUBERAY_MAX_RAYJOB_NAME
    default = named(stack(RAY)["variable"])["name"]["default"]
    assert accepts(RAY, "name", default)


def test_ray_cluster_runs_the_ranker_image_at_the_pinned_ray_version() -> None:
    """Head, workers and submitter: var.image (the ranker's digest); rayVersion from a variable."""
    cluster = ray_manifest("cluster")["spec"]
    assert cluster["rayVersion"] == "${var.ray_version}"
    for name, pod in ray_pods().items():
        assert one(pod["containers"])["image"] == "${var.image}", name
    calls = named(stack(ROOT_MODULE)["module"])
    assert calls["ray_offline"]["image"] == calls["ranker"]["image"]
    assert calls["ray_offline"]["ray_version"] == "${var.ray_version}"
    for image in (f"ghcr.io/feedrank/feedrank@{DIGEST}",):
        assert accepts(RAY, "image", image)
    for image in ("", "ghcr.io/feedrank/feedrank:latest", "ghcr.io/feedrank/feedrank:0123abc"):
        assert not accepts(RAY, "image", image)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_environment_runs_the_project_ray_version(environment: str) -> None:
    """Each environment's ray_version is the project's pin, and both validations take it."""
    version = tfvars(environment)["ray_version"]
    assert version == RAY_VERSION
    assert accepts(ROOT_MODULE, "ray_version", version)
    assert accepts(RAY, "ray_version", version)


@pytest.mark.parametrize("version", ["", "2.58", "latest", "2.58.1rc1", "v2.58.1"])
def test_ray_version_validation_takes_an_exact_release(version: str) -> None:
    """A tag, a partial or a pre-release version is refused at plan time."""
    assert not accepts(ROOT_MODULE, "ray_version", version)
    assert not accepts(RAY, "ray_version", version)


def test_ray_version_is_the_one_the_project_pins() -> None:
    """The environments' ray_version is one pyproject.toml's ray requirement allows."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [
        requirement
        for requirement in map(Requirement, project["project"]["dependencies"])
        if requirement.name == "ray"
    ]
    assert one(pins).specifier.contains(RAY_VERSION), str(one(pins))


def test_ray_worker_group_is_autoscaled_between_variable_bounds() -> None:
    """min/max from variables; replicas left to the autoscaler."""
    cluster = ray_manifest("cluster")["spec"]
    group = one(cluster["workerGroupSpecs"])
    assert group["minReplicas"] == "${var.worker_min_replicas}"
    assert group["maxReplicas"] == "${var.worker_max_replicas}"
    # Terraform would reset what the autoscaler scaled to on every apply.
    assert "replicas" not in group
    assert cluster["enableInTreeAutoscaling"] is True
    conditions = [
        rule["condition"]
        for rule in named(stack(RAY)["variable"])["worker_max_replicas"]["validation"]
    ]
    assert any("var.worker_max_replicas >= var.worker_min_replicas" in c for c in conditions)
    call = named(stack(ROOT_MODULE)["module"])["ray_offline"]
    assert call["worker_min_replicas"] == "${var.ray_worker_min_replicas}"
    assert call["worker_max_replicas"] == "${var.ray_worker_max_replicas}"
    # The head runs no Ray tasks: the workers do them.
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_ray_worker_bounds_in_tfvars_are_ordered(environment: str) -> None:
    """0 <= min <= max and max >= 1, as the validations demand."""
    values = tfvars(environment)
    assert 0 <= values["ray_worker_min_replicas"] <= values["ray_worker_max_replicas"]
    assert values["ray_worker_max_replicas"] >= 1


@pytest.mark.parametrize("pod", ["head", "worker", "submitter"])
def test_ray_containers_are_locked_down(pod: str) -> None:
    """Non-root (the bento's uid), read-only root, no escalation, no capabilities, seccomp."""
    locals_ = local_values(RAY)
    spec = ray_pods()[pod]
    pod_context = resolve(spec["securityContext"], locals_)
    assert pod_context["runAsNonRoot"] is True
    assert resolve(pod_context["runAsUser"], locals_) == resolve(
        local_values(RANKER)["bento_uid"], {}
    )
    assert pod_context["seccompProfile"] == {"type": "RuntimeDefault"}
    context = resolve(one(spec["containers"])["securityContext"], locals_)
    assert context["runAsNonRoot"] is True
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["privileged"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    # A read-only root needs a writable /tmp (Ray's session directory).
    mounts = resolve(one(spec["containers"])["volumeMounts"], locals_)
    assert {"name": "tmp", "mountPath": "/tmp"} in mounts
    if pod != "head":
        # Only the head's autoscaler sidecar talks to the Kubernetes API.
        assert spec["automountServiceAccountToken"] is False


def test_ray_autoscaler_sidecar_and_namespace_meet_the_restricted_standard() -> None:
    """KubeRay's sidecar gets the same security context; the namespace enforces restricted."""
    options = ray_manifest("cluster")["spec"]["autoscalerOptions"]
    assert options["securityContext"] == "${local.container_security_context}"
    assert options["volumeMounts"] == "${local.scratch_mounts}"
    assert set(options["resources"]) == {"requests", "limits"}
    namespace = resources(RAY, "kubernetes_namespace_v1")["ray"]
    labels = one(namespace["metadata"])["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(
    ("pod", "sizes"), [("head", "head_resources"), ("worker", "worker_resources")]
)
def test_ray_node_resources_come_from_variables(pod: str, sizes: str) -> None:
    """Head and worker requests and limits are the stack's variables, passed through."""
    container = one(ray_pods()[pod]["containers"])
    assert container["resources"] == {
        "requests": {
            "cpu": f"${{var.{sizes}.cpu_request}}",
            "memory": f"${{var.{sizes}.memory_request}}",
        },
        "limits": {
            "cpu": f"${{var.{sizes}.cpu_limit}}",
            "memory": f"${{var.{sizes}.memory_limit}}",
        },
    }
    call = named(stack(ROOT_MODULE)["module"])["ray_offline"]
    assert call[sizes] == f"${{var.ray_{sizes}}}"


def test_every_ray_container_has_requests_and_limits() -> None:
    """Head, worker, submitter and the autoscaler sidecar: CPU and memory, both bounds."""
    containers = [one(pod["containers"]) for pod in ray_pods().values()]
    containers.append(ray_manifest("cluster")["spec"]["autoscalerOptions"])
    for container in containers:
        for bound in ("requests", "limits"):
            assert set(container["resources"][bound]) == {"cpu", "memory"}, container.get("name")


def test_ray_secrets_come_from_secret_refs_only() -> None:
    """The Redis token and the registry password: secretKeyRef into the ExternalSecret's keys."""
    env = ray_env()
    for name in ("FEEDRANK_REDIS_PASSWORD", "PGPASSWORD"):
        assert env[name].secret_key, f"{name} must come from a secretKeyRef"
        assert env[name].value is None, f"{name} must not carry a value in the spec"
    locals_ = local_values(RAY)
    refs = [item["valueFrom"]["secretKeyRef"] for item in locals_["ray_env"] if "valueFrom" in item]
    assert {ref["name"] for ref in refs} == {"${local.runtime_secret}"}
    external = ray_manifest("runtime_secret")
    assert external["kind"] == "ExternalSecret"
    assert external["spec"]["target"]["name"] == "${local.runtime_secret}"
    synced = {item["secretKey"]: item["remoteRef"]["key"] for item in external["spec"]["data"]}
    assert {item.secret_key for item in env.values() if item.secret_key} == set(synced)
    assert synced == {
        "redis-password": "${var.redis_password_remote_key}",
        "feast-registry-password": "${var.feast_registry_password_remote_key}",
    }
    call = named(stack(ROOT_MODULE)["module"])["ray_offline"]
    assert call["redis_password_remote_key"] == "${module.online_store.auth_token_secret_name}"
    assert call["feast_registry_password_remote_key"] == (
        "${module.feast_registry.password_secret_name}"
    )


def test_ray_head_and_workers_get_the_same_environment() -> None:
    """local.ray_env in the head and workers; the submitter gets no secrets."""
    pods = ray_pods()
    for pod in ("head", "worker"):
        assert one(pods[pod]["containers"])["env"] == "${local.ray_env}", pod
    assert "env" not in one(pods["submitter"]["containers"]), "the submitter needs no secrets"


def test_ray_env_matches_the_names_the_code_reads() -> None:
    """Every name set is read; FEEDRANK_RAY_ADDRESS is unset (a RayJob's driver uses Ray's own)."""
    env = ray_env()
    read = names_read_by_code()
    assert env_mismatches(env, read, *RAY_ENV_RULES) == []
    assert "FEEDRANK_RAY_ADDRESS" not in env
    # A rename in Terraform, or a password the URL expands gone, is a mismatch.
    renamed = {
        ("FEEDRANK_REDIS_ADDRESS" if name == "FEEDRANK_REDIS_URL" else name): item
        for name, item in env.items()
    }
    assert env_mismatches(renamed, read, *RAY_ENV_RULES) == [
        "FEEDRANK_REDIS_ADDRESS: set by Terraform, read by no code",
        "FEEDRANK_REDIS_URL: needed by the cluster profile, not set by Terraform",
    ]
    broken = {name: item for name, item in env.items() if name != "FEEDRANK_REDIS_PASSWORD"}
    assert env_mismatches(broken, read, *RAY_ENV_RULES) == [
        "FEEDRANK_REDIS_URL: expands $(FEEDRANK_REDIS_PASSWORD), which is not set before it"
    ]


def test_ray_feast_settings_match_the_ranker() -> None:
    """The job fills the online store and registry the ranker reads, in the same format."""
    env, ranker = ray_env(), container_env(RANKER, pod_container(RANKER, "ranker"))
    assert env["FEEDRANK_REDIS_URL"].value == ranker["FEEDRANK_REDIS_URL"].value
    assert env["FEEDRANK_REGISTRY_URL"].value == ranker["FEEDRANK_REGISTRY_URL"].value
    assert env["FEEDRANK_WORKSPACE"].value == "${local.workspace}"
    assert local_values(RAY)["workspace"] == local_values(RANKER)["workspace"]
    calls = named(stack(ROOT_MODULE)["module"])
    for key in ("redis", "feast_registry_url", "secret_store_name"):
        assert calls["ray_offline"][key] == calls["ranker"][key], key


def test_ray_nodes_share_the_workspace_data_on_a_read_write_many_volume() -> None:
    """Workers read the parquet files the driver writes: one RWX claim at data/ on every node."""
    locals_ = local_values(RAY)
    claim = resources(RAY, "kubernetes_persistent_volume_claim_v1")["data"]
    spec = one(claim["spec"])
    assert spec["access_modes"] == ["ReadWriteMany"]
    assert spec["storage_class_name"] == "${var.shared_storage_class}"
    for pod in ("head", "worker"):
        container = one(ray_pods()[pod]["containers"])
        mounts = {m["name"]: m for m in resolve(container["volumeMounts"], locals_)}
        volumes = {v["name"]: v for v in resolve(ray_pods()[pod]["volumes"], locals_)}
        assert expand_locals(mounts["data"]["mountPath"], locals_) == (
            "/home/bentoml/bento/src/data"
        )
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == (
            "${kubernetes_persistent_volume_claim_v1.data.metadata[0].name}"
        )
        assert resolve(container["workingDir"], locals_) == "/home/bentoml/bento/src"
    # The cluster profile stages Ray's results under data/ray, on that volume.
    profile = ROOT / "feature_repo" / "feature_store.cluster.yaml"
    if profile.exists():
        storage = yaml.safe_load(profile.read_text(encoding="utf-8"))["offline_store"]
        assert storage["storage_path"].startswith("../data/")


def test_ray_pods_admit_only_their_namespace_and_the_kuberay_operator() -> None:
    """The job API runs what it is sent: no one outside the namespace but the operator (8265)."""
    policy = one(resources(RAY, "kubernetes_network_policy_v1")["ray"]["spec"])
    assert policy["pod_selector"] == [{}]
    assert policy["policy_types"] == ["Ingress"]
    own, operator = policy["ingress"]
    assert own["from"] == [{"pod_selector": [{}]}]
    assert "ports" not in own
    selector = one(one(operator["from"])["namespace_selector"])
    assert selector["match_labels"] == {
        "kubernetes.io/metadata.name": "${var.kuberay_operator_namespace}"
    }
    assert operator["ports"] == [{"port": "8265", "protocol": "TCP"}]


def test_deploy_doc_lists_exactly_the_ray_environment() -> None:
    """docs/deploy.md's table of the Ray pods' environment is local.ray_env, no more, no less."""
    text = DEPLOY_DOC.read_text(encoding="utf-8")
    section = text.split("### What the Ray pods get", 1)[1].split("\n#", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", section, flags=re.MULTILINE))
    assert documented == set(ray_env())
