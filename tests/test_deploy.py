"""deploy/: the compose file follows the Compose specification, the Helm chart renders (with Helm's own engine) to
valid Kubernetes objects, and both agree with the CLI's roles and the settings; the image's entry point is the CLI."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer
from check_jsonschema.builtin_schemas import get_builtin_schema

from custodes.config import ClusterSettings, Role, Settings, load_settings
from custodes.server.serve import check_cluster
from deploy_support import (
    CHART,
    COMPOSE,
    DEPLOY,
    ROOT,
    compose_model,
    custodes_services,
    dockerfile_instruction,
    dockerfile_instructions,
    example_variables,
    generated_env,
    load_yaml_text,
    parse_command_line,
    render_chart,
    required_variables,
    setting_at,
)

KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
"""The chart's kubeVersion floor and the newest Kubernetes whose schemas kubernetes-validate ships."""
SECRET_VARIABLES = {"CUSTODES_AMQP_URL", "CUSTODES_AUDIT_KEY", "CUSTODES_PSEUDONYM_KEY", "CUSTODES_ADMIN_TOKEN"}


def compose_errors(model: dict[str, Any]) -> list[str]:
    """Where and why `model` breaks the Compose specification's JSON schema (as check-jsonschema ships it)."""
    validator = jsonschema.Draft202012Validator(get_builtin_schema("vendor.compose-spec"))
    return [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(model)]


def assert_loads_as_settings(environ: dict[str, str], config_text: str | None, tmp_path: Path) -> Settings:
    """Load the settings a container would, from its environment (and its mounted custodes.yaml): every
    CUSTODES_SECTION__KEY lands on a real setting, and every other CUSTODES_* variable is a reference the file
    names (or the CUSTODES_CONFIG and CUSTODES_DATABASE_URL shortcuts)."""
    environ = dict(environ)
    if config_text is not None:
        config = tmp_path / "custodes.yaml"
        config.write_text(config_text, encoding="utf-8")
        environ["CUSTODES_CONFIG"] = str(config)
    settings = load_settings(environ=environ)
    for name, value in environ.items():
        if not name.startswith("CUSTODES_") or name in {"CUSTODES_CONFIG", "CUSTODES_DATABASE_URL"}:
            continue
        if "__" in name:
            assert str(setting_at(settings, name)) == value, name
        else:
            assert config_text is not None and f"env:{name}" in config_text, f"{name} is neither setting nor reference"
    assert settings.database.url == environ["CUSTODES_DATABASE_URL"]
    return settings


# --- compose.yaml ---------------------------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    model = compose_model(generated_env())
    assert compose_errors(model) == []
    broken = copy.deepcopy(model)
    broken["services"]["worker"]["deploy"]["replica"] = 3
    broken["services"]["receiver"]["healthcheck"] = {"test": "curl", "interval": 5}
    errors = compose_errors(broken)
    assert "services.receiver.healthcheck.interval: 5 is not of type 'string'" in errors
    assert "services.worker.deploy: 'replica' does not match any of the regexes: '^x-'" in errors


def test_compose_commits_no_secret_and_refuses_to_start_without_one() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    required = required_variables(text)
    assert required == {
        "POSTGRES_PASSWORD",
        "RABBITMQ_PASSWORD",
        "CUSTODES_AUDIT_KEY",
        "CUSTODES_PSEUDONYM_KEY",
        "CUSTODES_ADMIN_TOKEN",
    }
    assert required <= set(example_variables())
    assert not re.search(r"^[A-Z_]+=\S", (DEPLOY / ".env.example").read_text(encoding="utf-8"), re.MULTILINE)
    raw = load_yaml_text(text)
    for service in raw["services"].values():
        for name, value in service.get("environment", {}).items():
            if name in SECRET_VARIABLES | {"CUSTODES_DATABASE_URL"} or re.search("PASS|KEY|TOKEN", name):
                assert "${" in value, f"{name} holds a literal"
    env = generated_env()
    del env["CUSTODES_AUDIT_KEY"]
    with pytest.raises(ValueError, match=r"CUSTODES_AUDIT_KEY is missing: set CUSTODES_AUDIT_KEY in deploy/\.env"):
        compose_model(env)
    assert "deploy/.env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()


def test_compose_services_run_roles_the_cli_accepts() -> None:
    model = compose_model(generated_env())
    services = custodes_services(model)
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    roles = {}
    for name, service in services.items():
        command, params = parse_command_line([*entrypoint[1:], *service["command"]])
        if command == "serve":
            roles[name] = (params["role"], service["deploy"]["replicas"])
        else:
            assert (name, command) == ("migrate", "migrate")
            assert service["restart"] == "no"
    assert roles == {"receiver": (Role.RECEIVER, 2), "worker": (Role.WORKER, 3), "runner": (Role.RUNNER, 2)}
    for name in ("receiver", "worker", "runner"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["depends_on"]["rabbitmq"] == {"condition": "service_healthy"}
    # every role serves /healthz: the image's check stays on for each (test_deploy_topology.py runs it)
    assert not any("healthcheck" in services[name] for name in ("receiver", "worker", "runner"))
    with pytest.raises(typer.BadParameter, match="'detector' is not one of"):
        parse_command_line(["serve", "--role", "detector"])


def test_compose_environment_is_settings_custodes_loads(tmp_path: Path) -> None:
    env = generated_env()
    model = compose_model(env)
    for name, service in custodes_services(model).items():
        (mount,) = service["configs"]
        assert mount["target"] == service["environment"]["CUSTODES_CONFIG"]
        config_text = (DEPLOY / model["configs"][mount["source"]]["file"]).read_text(encoding="utf-8")
        settings = assert_loads_as_settings(service["environment"], config_text, tmp_path)
        assert settings.database.url.startswith("postgresql+asyncpg://custodes:")
        assert settings.cluster.partitions == 16
        assert settings.cluster.amqp_url is not None
        assert settings.cluster.amqp_url.reveal() == f"amqp://custodes:{env['RABBITMQ_PASSWORD']}@rabbitmq:5672/"
        assert settings.database.audit_key is not None and settings.scoring.pseudonym_key is not None
        assert [token.name for token in settings.server.api_tokens] == ["soc-admin"]
        if name != "migrate":
            check_cluster(settings, Role(service["command"][-1]))
    rabbitmq = model["services"]["rabbitmq"]
    (plugins,) = rabbitmq["configs"]
    assert plugins["target"] == "/etc/rabbitmq/enabled_plugins"
    enabled = (DEPLOY / model["configs"][plugins["source"]]["file"]).read_text(encoding="utf-8")
    assert "rabbitmq_consistent_hash_exchange" in enabled
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_PASS"] == env["RABBITMQ_PASSWORD"]
    assert model["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == env["POSTGRES_PASSWORD"]


# --- Dockerfile -----------------------------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_runs_the_cli() -> None:
    instructions = dockerfile_instructions()
    stages = [args for instruction, args in instructions if instruction == "FROM"]
    assert stages == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    final = instructions[[instruction for instruction, _ in instructions].index("FROM", 2) :]
    assert ("COPY", "--from=build /opt/custodes /opt/custodes") in final
    (user,) = [args for instruction, args in final if instruction == "USER"]
    assert all(int(part) >= 1000 for part in user.split(":"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    assert entrypoint == ["custodes"] and scripts["custodes"] == "custodes.cli.main:main"
    command, params = parse_command_line(dockerfile_instruction("CMD"))
    assert (command, params["role"]) == ("serve", Role.ALL)
    healthcheck = dockerfile_instruction("HEALTHCHECK")
    assert healthcheck[:2] == ["python", "-c"] and "/healthz" in healthcheck[2]  # run in test_deploy_topology.py
    # what the build copies is in the context its .dockerignore keeps
    kept = {line.strip("!/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if "!" in line}
    copies = [args.split()[:-1] for instruction, args in instructions if instruction == "COPY" and "--" not in args]
    copied = {path for sources in copies for path in sources}
    assert copied <= kept and all((ROOT / path).exists() for path in copied)


# --- the Helm chart -------------------------------------------------------------------------------------------------

SECRET_DATA = {
    "database-url": "postgresql+asyncpg://custodes:9f2c44e1a0b7d3e5@postgres.db:5432/custodes",
    "amqp-url": "amqp://custodes:0c1d2e3f4a5b6c7d@rabbitmq.mq:5672/",
    "audit-key": "a" * 32,
    "pseudonym-key": "b" * 32,
    "admin-token": "c" * 32,
}
"""What the Secret the chart refers to would hold (the chart never holds one)."""


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def container_environment(container: dict[str, Any], secret_name: str) -> dict[str, str]:
    """A container's environment as Kubernetes would set it from its values and the Secret's keys."""
    environ = {}
    for variable in container["env"]:
        if "valueFrom" in variable:
            ref = variable["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret_name
            environ[variable["name"]] = SECRET_DATA[ref["key"]]
        else:
            environ[variable["name"]] = variable["value"]
    return environ


def test_chart_lints_clean() -> None:
    from helm_python.chart import lint

    for version in KUBERNETES_VERSIONS:
        report = lint(CHART, strict=True, kube_version=f"v{version}")
        assert report["errors"] == [] and report["messages"] == [], report


@pytest.mark.parametrize("kubernetes", KUBERNETES_VERSIONS)
def test_chart_renders_valid_kubernetes_objects(kubernetes: str) -> None:
    manifests = render_chart()
    assert sorted(m["kind"] for m in manifests) == [
        "ConfigMap",
        "Deployment",
        "Deployment",
        "Deployment",
        "Job",
        "Service",
    ]
    for manifest in manifests:
        kubernetes_validate.validate(manifest, kubernetes, strict=True)
    broken = copy.deepcopy(by_kind(manifests, "Deployment")["soc-custodes-worker"])
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(broken, kubernetes, strict=True)


def test_chart_deployments_run_the_roles_with_settings_custodes_loads(tmp_path: Path) -> None:
    manifests = render_chart()
    (config_map,) = by_kind(manifests, "ConfigMap").values()
    deployments = by_kind(manifests, "Deployment")
    assert {name: d["spec"]["replicas"] for name, d in deployments.items()} == {
        "soc-custodes-receiver": 2,
        "soc-custodes-worker": 3,
        "soc-custodes-runner": 2,
    }
    entrypoint = dockerfile_instruction("ENTRYPOINT")
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["spec"]["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        command, params = parse_command_line([*entrypoint[1:], *container["args"]])
        role = params["role"]
        assert command == "serve" and pod["metadata"]["labels"]["app.kubernetes.io/component"] == role
        environ = container_environment(container, "custodes")
        mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
        volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == config_map["metadata"]["name"]
        assert environ["CUSTODES_CONFIG"] == mount["mountPath"] + "/custodes.yaml"
        settings = assert_loads_as_settings(environ, config_map["data"]["custodes.yaml"], tmp_path)
        check_cluster(settings, role)
        assert settings.cluster.amqp_url is not None and settings.cluster.amqp_url.reveal() == SECRET_DATA["amqp-url"]
        assert settings.server.host == "0.0.0.0"  # noqa: S104 (a container listens on its pod's address)
        assert settings.cluster.partitions == 16
        # every role serves its probes and /metrics on the server's port
        (port,) = container["ports"]
        assert (port["name"], port["containerPort"]) == ("http", settings.server.port)
        assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        scrape = {key: pod["metadata"]["annotations"][f"prometheus.io/{key}"] for key in ("scrape", "port", "path")}
        assert scrape == {"scrape": "true", "port": str(settings.server.port), "path": "/metrics"}
    (service,) = by_kind(manifests, "Service").values()
    receiver_labels = deployments["soc-custodes-receiver"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= receiver_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_chart_migration_job_runs_before_install_and_upgrade(tmp_path: Path) -> None:
    (job,) = by_kind(render_chart({"database": {"schemaName": "soc"}}), "Job").values()
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert parse_command_line([*dockerfile_instruction("ENTRYPOINT")[1:], *container["args"]])[0] == "migrate"
    settings = assert_loads_as_settings(container_environment(container, "custodes"), None, tmp_path)
    assert settings.database.schema_name == "soc"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert by_kind(render_chart({"migration": {"enabled": False}}), "Job") == {}


def test_chart_values_reach_the_settings(tmp_path: Path) -> None:
    values = {
        "image": {"repository": "registry.example.com/custodes", "tag": "1.2.3"},
        "secret": {"name": "soc-secrets"},
        "cluster": {"partitions": 64, "exchange": "soc.events"},
        "receiver": {"replicas": 4, "port": 9000},
        "worker": {"replicas": 8},
        "config": {"scoring": {"enabled": False}, "responder": {"channels": {"soc": {"url": "env:SOC_WEBHOOK_URL"}}}},
        "extraEnv": [{"name": "SOC_WEBHOOK_URL", "value": "https://hooks.example.com/soc"}],
    }
    manifests = render_chart(values, release="custodes")
    deployments = by_kind(manifests, "Deployment")
    assert deployments["custodes-receiver"]["spec"]["replicas"] == 4
    assert deployments["custodes-worker"]["spec"]["replicas"] == 8
    (config_map,) = by_kind(manifests, "ConfigMap").values()
    (container,) = deployments["custodes-receiver"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example.com/custodes:1.2.3"
    assert container["ports"][0]["containerPort"] == 9000
    settings = assert_loads_as_settings(
        container_environment(container, "soc-secrets"), config_map["data"]["custodes.yaml"], tmp_path
    )
    assert (settings.cluster.partitions, settings.cluster.exchange, settings.server.port) == (64, "soc.events", 9000)
    assert settings.scoring.enabled is False
    assert settings.responder.channels["soc"].url is not None
    assert settings.responder.channels["soc"].url.reveal() == "https://hooks.example.com/soc"
    for manifest in manifests:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)


def test_chart_refuses_bad_values_naming_where() -> None:
    from helm_python.errors import HelmValuesError

    refused: list[tuple[dict[str, Any], str]] = [
        ({"worker": {"replicas": "two"}}, "at '/worker/replicas': got string, want integer"),
        ({"cluster": {"partitions": 0}}, "at '/cluster/partitions': minimum: got 0, want 1"),
        ({"receivers": {"replicas": 1}}, "additional properties 'receivers' not allowed"),
        ({"cluster": {"exchange": "a b"}}, "at '/cluster/exchange'"),
    ]
    for values, where in refused:
        with pytest.raises(HelmValuesError, match=re.escape(where)):
            render_chart(values)
    # the chart's limits are the settings' own
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))["properties"]["cluster"]
    settings = ClusterSettings.model_json_schema()["properties"]
    assert schema["properties"]["partitions"]["minimum"] == settings["partitions"]["minimum"]
    assert schema["properties"]["partitions"]["maximum"] == settings["partitions"]["maximum"]
    assert schema["properties"]["exchange"]["pattern"] == settings["exchange"]["pattern"]
    assert schema["properties"]["exchange"]["maxLength"] == settings["exchange"]["maxLength"]


def test_chart_holds_no_secret_value() -> None:
    manifests = render_chart()
    assert by_kind(manifests, "Secret") == {}
    workloads = [*by_kind(manifests, "Deployment").values(), *by_kind(manifests, "Job").values()]
    for workload in workloads:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for variable in container["env"]:
                if variable["name"] in SECRET_VARIABLES | {"CUSTODES_DATABASE_URL"}:
                    assert set(variable) == {"name", "valueFrom"} and "secretKeyRef" in variable["valueFrom"]
    (config_map,) = by_kind(manifests, "ConfigMap").values()
    config = load_yaml_text(config_map["data"]["custodes.yaml"])
    assert config["cluster"]["amqp_url"] == "env:CUSTODES_AMQP_URL"
    assert config["database"]["audit_key"] == "env:CUSTODES_AUDIT_KEY"


# --- the migration step ---------------------------------------------------------------------------------------------


def test_migrate_brings_the_store_to_the_head_and_exits(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory
    from typer.testing import CliRunner

    from custodes.cli import app
    from custodes.store.migrate import alembic_config

    heads = sorted(ScriptDirectory.from_config(alembic_config()).get_heads())
    (tmp_path / "custodes.yaml").write_text("{}\n", encoding="utf-8")
    env = {
        "CUSTODES_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/custodes.db",
        "CUSTODES_CONFIG": str(tmp_path / "custodes.yaml"),
    }
    for _ in range(2):  # a second run finds nothing to do
        result = CliRunner().invoke(app, ["migrate", "--json"], env=env)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"revisions": heads}
    env["CUSTODES_DATABASE_URL"] = "postgresql+asyncpg://custodes:hunter2hunter2@127.0.0.1:1/custodes"
    result = CliRunner().invoke(app, ["migrate"], env=env)
    assert result.exit_code == 2
    assert "cannot open the store at postgresql+asyncpg://custodes:***@127.0.0.1:1/custodes" in result.stderr
    assert "hunter2" not in result.output
