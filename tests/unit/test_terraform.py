"""Wiring checks of terraform/ that `terraform validate` and checkov cannot make.

The files are parsed with python-hcl2; nothing here needs terraform, a cloud
account or a cluster.
"""

from __future__ import annotations

import re
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
    assert {"ranker", "online_store", "mlflow", "feast_registry"} <= {path.name for path in MODULES}


def test_root_module_calls_the_modules_by_relative_path() -> None:
    calls = named(stack(ROOT_MODULE)["module"])
    assert set(calls) == {"ranker", "online_store", "mlflow", "feast_registry"}
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


def test_ranker_container_is_locked_down() -> None:
    ranker = TERRAFORM / "modules" / "ranker"
    deployment = resources(ranker, "kubernetes_deployment_v1")["ranker"]
    pod = one(one(one(deployment["spec"])["template"])["spec"])
    context = one(one(pod["container"])["security_context"])
    assert context["run_as_non_root"] is True
    assert context["read_only_root_filesystem"] is True
    assert context["allow_privilege_escalation"] is False
    assert one(context["capabilities"])["drop"] == ["ALL"]


def test_ranker_secrets_come_from_secret_refs_only() -> None:
    ranker = TERRAFORM / "modules" / "ranker"
    deployment = resources(ranker, "kubernetes_deployment_v1")["ranker"]
    env = one(one(one(one(deployment["spec"])["template"])["spec"])["container"])["env"]
    by_name = {item["name"]: item for item in env}
    for name in ("FEEDRANK_REDIS_PASSWORD", "PGPASSWORD"):
        assert "value" not in by_name[name], f"{name} must not carry a value in the spec"
        assert one(one(by_name[name]["value_from"])["secret_key_ref"])["key"]
    assert by_name["MLFLOW_TRACKING_URI"]["value"] == "${var.mlflow_tracking_uri}"


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
    # The image digest is the one value CD supplies per deploy (-var image_digest=...).
    assert required - set(values) == {"image_digest"}


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
