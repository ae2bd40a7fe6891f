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
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

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
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


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


def env_mismatches(env: dict[str, EnvVar], read: set[str]) -> list[str]:
    """What is wrong between what a container is given and what the code reads."""
    expanded = {
        target: name for name, item in env.items() for target in EXPANSION.findall(item.value or "")
    }
    problems = [
        f"{name}: set by Terraform, read by no code"
        for name in sorted(env)
        if name not in read and name not in READ_BY_LIBRARIES and name not in expanded
    ]
    problems += [
        f"{name}: required in production, not set by Terraform"
        for name in sorted(REQUIRED_IN_PRODUCTION - set(env))
    ]
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
    assert {"ranker", "online_store", "event_stream", "mlflow", "feast_registry"} <= {
        path.name for path in MODULES
    }


def test_root_module_calls_the_modules_by_relative_path() -> None:
    calls = named(stack(ROOT_MODULE)["module"])
    assert set(calls) == {"ranker", "online_store", "event_stream", "mlflow", "feast_registry"}
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
    """Only the ranker module runs feedrank's image."""
    for directory in MODULES:
        if directory == RANKER:
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
