"""Settings: YAML with located errors, environment overrides, secret references that never show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from custodes.config import Secret, load_settings, resolve_secret
from custodes.errors import ConfigError, CustodesError

HOOK = "webhooks:\n  generic:\n    kind: generic\n    auth:\n      scheme: hmac\n      secret: "


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custodes.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"CUSTODES_CONFIG_UNUSED": "1"})
    assert settings.database.url.startswith("sqlite+aiosqlite:///")
    assert settings.source("okta").logsource.product == "okta"
    assert settings.source("cloudtrail").logsource.service == "cloudtrail"


def test_file_values_and_environment_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: 9000\nsources:\n  proxy:\n    format: generic\n    category: proxy\n")
    settings = load_settings(
        path,
        environ={
            "CUSTODES_SERVER__PORT": "9100",
            "CUSTODES_DATABASE_URL": "postgresql+asyncpg://db/custodes",
            "CUSTODES_SERVER__HOST": "127.0.0.2",
        },
    )
    assert settings.server.port == 9100 and settings.server.host == "127.0.0.2"
    assert settings.database.url == "postgresql+asyncpg://db/custodes"
    assert settings.source("proxy").logsource.category == "proxy"
    assert settings.source("okta").format == "okta"


@pytest.mark.parametrize(
    ("given", "opened"),
    [
        ("sqlite:///var/c.db", "sqlite+aiosqlite:///var/c.db"),
        ("SQLITE+aiosqlite:///var/c.db", "sqlite+aiosqlite:///var/c.db"),
        ("postgres://u:pw@db:5432/c", "postgresql+asyncpg://u:pw@db:5432/c"),
        ("postgresql://u@db/c", "postgresql+asyncpg://u@db/c"),
        ("postgresql+asyncpg://u@db/c", "postgresql+asyncpg://u@db/c"),
    ],
)
def test_a_store_url_names_its_database_and_gets_the_driver_custodes_opens_it_with(
    tmp_path: Path, given: str, opened: str
) -> None:
    assert load_settings(write(tmp_path, f"database:\n  url: {given}\n"), environ={}).database.url == opened
    assert load_settings(None, environ={"CUSTODES_DATABASE_URL": given}).database.url == opened


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("mysql://root:hunter2@db/c", "scheme 'mysql'"),
        ("postgresql+psycopg2://u:hunter2@db/c", "scheme 'postgresql+psycopg2'"),
        ("var/custodes.db", "a URL without a scheme"),
    ],
)
def test_a_store_url_custodes_cannot_open_is_refused_by_its_scheme_and_its_source(
    tmp_path: Path, given: str, said: str
) -> None:
    """Once SQLAlchemy's 'The asyncio extension requires an async driver' when the store was first opened."""
    path = write(tmp_path, f"database:\n  url: {given}\n")
    expected = f"{said} is not a store Custodes opens: write sqlite:///path/to/file.db or postgresql://"
    with pytest.raises(ConfigError) as file_error:
        load_settings(path, environ={})
    assert f"custodes.yaml:2:8 (database.url): {expected}" in str(file_error.value)
    for variable in ("CUSTODES_DATABASE_URL", "CUSTODES_DATABASE__URL"):
        with pytest.raises(ConfigError) as env_error:
            load_settings(None, environ={variable: given})
        assert f"environment {variable} (database.url): {expected}" in str(env_error.value)
        assert "hunter2" not in str(env_error.value) + str(file_error.value)


def test_secrets_are_references_and_never_print(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret-value\n")
    path = write(
        tmp_path,
        f"responder:\n  okta:\n    base_url: https://acme.okta.com\n    token: file:{secret_file}\n"
        + HOOK
        + "env:HOOK_SECRET\n",
    )
    settings = load_settings(path, environ={"HOOK_SECRET": "env-secret-value-0123"})
    assert settings.responder.okta is not None
    assert settings.responder.okta.token.reveal() == "file-secret-value"
    assert settings.webhooks["generic"].auth.secret.reveal() == "env-secret-value-0123"
    shown = repr(settings) + str(settings.model_dump()) + settings.model_dump_json()
    assert "secret-value" not in shown
    assert "env:HOOK_SECRET" in settings.model_dump_json()


def test_a_literal_secret_is_refused_with_its_location(tmp_path: Path) -> None:
    path = write(tmp_path, HOOK + "hunter2\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    text = str(caught.value)
    assert f"{path}:6:15" in text and "never the value itself" in text and "hunter2" not in text


def test_a_missing_environment_secret_names_the_variable(tmp_path: Path) -> None:
    path = write(tmp_path, HOOK + "env:NOT_SET_ANYWHERE\n")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE is not set"):
        load_settings(path, environ={})
    with pytest.raises(ValueError, match="cannot read file"):
        resolve_secret(f"file:{tmp_path / 'missing'}")
    assert repr(Secret("x", "env:X")) == "Secret(env:X)"


def test_every_problem_is_located(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "server:\n  port: not-a-port\n  hots: 1\nsources:\n  s:\n    format: syslog\n  t:\n    format: okta\n"
        "    colour: red\n  u:\n    product: aws\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    text = str(caught.value)
    assert f"{path}:2:9 (server.port)" in text
    assert f"{path}:3:3 (server.hots): unknown field 'hots'" in text
    assert f"{path}:6:13 (sources.s.format)" in text
    assert f"{path}:9:5 (sources.t.colour): unknown field 'colour'" in text
    assert "(sources.u.format): missing required field 'format'" in text


def test_bad_yaml_and_missing_file_are_located(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: [1, 2\n")
    with pytest.raises(CustodesError, match=r"custodes.yaml:\d+:\d+: invalid YAML"):
        load_settings(path, environ={})
    with pytest.raises(CustodesError, match="file not found"):
        load_settings(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"), environ={})


def test_a_bad_environment_override_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"environment CUSTODES_SERVER__PORT \(server.port\)"):
        load_settings(write(tmp_path, "{}\n"), environ={"CUSTODES_SERVER__PORT": "eighty"})


@pytest.mark.parametrize(
    ("variable", "where"),
    [
        ("CUSTODES_BOGUS__X", r"environment CUSTODES_BOGUS__X \(bogus\): unknown field 'bogus'"),
        ("CUSTODES_SERVER__HOST__X", r"environment CUSTODES_SERVER__HOST__X \(server.host\): Input should be a valid"),
    ],
)
def test_a_section_or_value_an_override_made_is_blamed_on_the_variable(
    tmp_path: Path, variable: str, where: str
) -> None:
    """Once blamed on custodes.yaml:1:1 (or the file's `host:`), where the problem is not."""
    for text in ("{}\n", "server:\n  host: 127.0.0.1\n"):
        with pytest.raises(ConfigError, match=where) as raised:
            load_settings(write(tmp_path, text), environ={variable: "1"})
        assert "custodes.yaml" not in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "field"),
    [
        ("CUSTODES_INGEST__MAX_HOLD_HOURS", "ingest.max_hold_hours"),
        ("CUSTODES_INGEST__MAX_FUTURE_SKEW_HOURS", "ingest.max_future_skew_hours"),
        ("CUSTODES_ACCESS_REVIEW__DORMANT_DAYS", "access_review.dormant_days"),
        ("CUSTODES_ACCESS_REVIEW__UNUSED_DAYS", "access_review.unused_days"),
    ],
)
def test_a_span_beyond_a_century_is_refused_naming_the_setting(tmp_path: Path, variable: str, field: str) -> None:
    """Once accepted, then an OverflowError ('Python int too large to convert to C int') when the span was used."""
    with pytest.raises(ConfigError, match=rf"environment {variable} \({field}\): Input should be less than"):
        load_settings(write(tmp_path, "{}\n"), environ={variable: "99999999999"})


def test_unknown_source_says_what_is_configured() -> None:
    settings = load_settings(None, environ={})
    with pytest.raises(ConfigError, match=r"unknown source 'nope' \(configured sources: cloudtrail, okta\)"):
        settings.source("nope")


def test_scoring_tables_refuse_unknown_names_and_negative_values_where_they_are(tmp_path: Path) -> None:
    """Once a misspelt feature, family or level was silently ignored and a negative weight turned points into
    credit."""
    path = write(
        tmp_path,
        "scoring:\n  feature_weights: {usb_file: 2, usb: -1}\n  family_caps: {exfiltraton: 10}\n"
        "  sigma_points: {hgh: 3}\n  watchlists: {departing: -1}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    text = str(caught.value)
    assert f"{path}:2:31 (scoring.feature_weights.usb_file): unknown feature 'usb_file': did you mean usb_files" in text
    assert f"{path}:2:39 (scoring.feature_weights.usb): Input should be greater than or equal to 0" in text
    assert "(scoring.family_caps.exfiltraton): unknown family 'exfiltraton': did you mean exfiltration?" in text
    assert "(scoring.sigma_points.hgh): unknown severity 'hgh': did you mean high?" in text
    assert "(scoring.watchlists.departing): Input should be greater than or equal to 0" in text


def test_a_scoring_table_given_in_part_keeps_the_other_defaults(tmp_path: Path) -> None:
    """Once `family_caps: {data: 30}` left every other family uncapped and `sigma_points: {high: 20}` gave critical
    findings no points."""
    path = write(tmp_path, "scoring:\n  family_caps: {data: 30}\n  sigma_points: {high: 20}\n")
    settings = load_settings(path, environ={"CUSTODES_SCORING__WATCHLISTS__DEPARTING": "2"}).scoring
    assert settings.family_caps["data"] == 30 and settings.family_caps["exfiltration"] == 70
    assert settings.sigma_points == {"informational": 0, "low": 3, "medium": 8, "high": 20, "critical": 25}
    assert settings.watchlists == {"departing": 2, "on_notice": 1.5, "privileged": 1.2, "contractor": 1.2}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("scoring:\n  threshold: .inf\n", "2:14 (scoring.threshold)", "Input should be a finite number"),
        (
            "scoring:\n  feature_weights: {usb: .nan}\n",
            "2:26 (scoring.feature_weights.usb)",
            "Input should be a finite number",
        ),
        (
            "playbooks:\n  heartbeat_seconds: .inf\n",
            "2:22 (playbooks.heartbeat_seconds)",
            "Input should be a finite number",
        ),
    ],
)
def test_a_setting_is_never_infinite_or_nan(tmp_path: Path, text: str, where: str, message: str) -> None:
    """Once `.inf` passed `gt=0`: a threshold no risk reaches, a worker that sleeps forever between heartbeats."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{where}: {message}")):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("https://pastebin.com/raw", "is a URL: give the domain and optional path, 'pastebin.com/raw'"),
        ("'*.pastebin.com'", "give 'pastebin.com', which covers its subdomains"),
        ("' pastebin.com'", "is not a domain with an optional path prefix"),
        ("''", "is not a domain with an optional path prefix"),
    ],
)
def test_a_domain_list_entry_is_a_domain(tmp_path: Path, entry: str, message: str) -> None:
    """Once a URL or a wildcard in a domain list was kept and matched nothing, silently."""
    path = write(tmp_path, f"scoring:\n  leak_domains: [{entry}]\n")
    with pytest.raises(ConfigError, match=rf"2:18 \(scoring.leak_domains.0\): .*{message}"):
        load_settings(path, environ={})
    assert load_settings(
        write(tmp_path, "scoring:\n  job_domains: [Example.COM/Jobs]\n"), environ={}
    ).scoring.job_domains == ["example.com/jobs"]


def test_a_service_pattern_that_is_no_regular_expression_is_refused_where_it_is(tmp_path: Path) -> None:
    """Once `error: error: missing ), unterminated subpattern at position 0` when scoring started, without where."""
    path = write(tmp_path, "scoring:\n  identities:\n    service_patterns: ['^svc-', '(']\n")
    with pytest.raises(
        ConfigError, match=re.escape("3:33 (scoring.identities.service_patterns.1): '(' is not a regular")
    ):
        load_settings(path, environ={})
