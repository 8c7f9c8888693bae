"""Directories as identity providers export them: Microsoft Graph users (Entra ID), Google Workspace Directory users
and Okta users become people whose every name resolves to one entity."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from custodes.cli import app
from custodes.config import IdentitySettings, ScoringSettings
from custodes.detections.scoring.identity import IdentityResolver, load_directory, zone_of
from custodes.detections.scoring.service import current_resolver, resolver_for
from custodes.errors import CustodesError
from custodes.store import Store

GRAPH_PAGE: dict[str, Any] = {
    "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
    "value": [
        {
            "id": "4f0b8f3c-2a39-4e8e-9a3b-1f7c2d9e6a11",
            "userPrincipalName": "Jane.Doe@corp.example",
            "mail": "jane.doe@corp.example",
            "otherMails": ["jane@home.example"],
            "proxyAddresses": ["SMTP:jane.doe@corp.example", "smtp:jdoe@corp.example", "X500:/o=corp/cn=jdoe"],
            "onPremisesSamAccountName": "jdoe",
            "displayName": "Jane Doe",
            "department": "Finance",
            "jobTitle": "Analyst",
            "userType": "Member",
            "employeeType": "Employee",
            "employeeLeaveDateTime": "2025-06-30T00:00:00Z",
            "mailboxSettings": {"timeZone": "Romance Standard Time"},
        },
        {
            "id": "9d1e2c44-77aa-4c3e-8f0e-0b5d6c7e8f90",
            "userPrincipalName": "vendor_partner.example#EXT#@corp.onmicrosoft.com",
            "mail": "sam@partner.example",
            "displayName": "Sam Partner",
            "department": None,
            "jobTitle": None,
            "userType": "Guest",
        },
    ],
}

GOOGLE_PAGE: dict[str, Any] = {
    "kind": "admin#directory#users",
    "users": [
        {
            "id": "104857600000000000001",
            "primaryEmail": "max@corp.example",
            "name": {"givenName": "Max", "familyName": "Roe", "fullName": "Max Roe"},
            "isAdmin": True,
            "aliases": ["maxr@corp.example"],
            "emails": [{"address": "max@corp.example", "primary": True}, {"address": "max@corp-legacy.example"}],
            "organizations": [
                {"title": "Intern", "department": "Sales"},
                {"title": "IT Administrator", "department": "IT", "primary": True},
            ],
        }
    ],
}


def written(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "people.json"
    path.write_text(json.dumps(data))
    return path


def test_graph_users_are_people_every_name_of_whom_resolves_to_them(tmp_path: Path) -> None:
    jane, guest = load_directory(written(tmp_path, GRAPH_PAGE))
    assert (jane.id, jane.display_name, jane.department, jane.title, jane.timezone) == (
        "jane.doe@corp.example",
        "Jane Doe",
        "Finance",
        "Analyst",
        "Romance Standard Time",
    )
    assert zone_of(jane, ZoneInfo("UTC")) == ZoneInfo("Europe/Paris"), "a mailbox's Windows zone, as CLDR maps it"
    assert jane.departure_date == date(2025, 6, 30) and jane.watchlists == {}
    assert guest.watchlists == {"contractor": date.min} and guest.department is None
    resolver = IdentityResolver([jane, guest], IdentitySettings())
    key = resolver.resolve("jane.doe@corp.example")
    names = (
        "Jane.Doe@corp.example",
        "jdoe@corp.example",
        "jane@home.example",
        "CORP\\jdoe",
        GRAPH_PAGE["value"][0]["id"],
    )
    for name in names:
        assert resolver.resolve(name) == key, name
    assert resolver.resolve("/o=corp/cn=jdoe") != key, "only SMTP proxy addresses are names"
    assert resolver.resolve("sam@partner.example") == resolver.resolve(
        "vendor_partner.example#ext#@corp.onmicrosoft.com"
    )


def test_google_directory_users_take_the_primary_organisation_and_admins_are_privileged(tmp_path: Path) -> None:
    [person] = load_directory(written(tmp_path, GOOGLE_PAGE))
    assert (person.id, person.display_name, person.department, person.title) == (
        "max@corp.example",
        "Max Roe",
        "IT",
        "IT Administrator",
    )
    assert person.watchlists == {"privileged": date.min}
    resolver = IdentityResolver([person], IdentitySettings())
    for name in ("maxr@corp.example", "max@corp-legacy.example", "104857600000000000001"):
        assert resolver.resolve(name) == resolver.resolve("max@corp.example"), name


def test_okta_users_keep_their_login_contractors_and_hr_dates(tmp_path: Path) -> None:
    okta = [
        {
            "id": "00u1abcd",
            "status": "ACTIVE",
            "profile": {
                "login": "Ann@corp.example",
                "email": "ann@corp.example",
                "firstName": "Ann",
                "lastName": "Lee",
                "department": "Legal",
                "title": "Counsel",
                "userType": "Contractor",
                "noticeDate": "2025-01-10",
            },
        }
    ]
    [ann] = load_directory(written(tmp_path, okta))
    assert (ann.id, ann.display_name, ann.aliases) == (
        "ann@corp.example",
        "Ann Lee",
        ["Ann@corp.example", "ann@corp.example", "00u1abcd"],
    )
    assert ann.watchlists == {"contractor": date.min} and ann.notice_date == date(2025, 1, 10)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {**GRAPH_PAGE, "@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=X"},
            "@odata.nextLink is",
        ),
        ({**GOOGLE_PAGE, "nextPageToken": "Q2"}, "(nextPageToken is set), so people are missing"),
        ({"value": [{**GRAPH_PAGE["value"][0], "employeeLeaveDateTime": "soon"}]}, "person #1: employeeLeaveDateTime"),
        ({"value": {"userPrincipalName": "x"}}, "a directory is a JSON list of people"),
    ],
)
def test_a_directory_export_that_is_partial_or_broken_is_refused_saying_why(
    tmp_path: Path, data: Any, message: str
) -> None:
    with pytest.raises(CustodesError, match=message.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        load_directory(written(tmp_path, data))


async def test_a_process_that_does_not_score_reads_the_directory_again_only_when_it_changes(
    store: Store, tmp_path: Path
) -> None:
    path = written(tmp_path, GRAPH_PAGE)
    settings = ScoringSettings(directory=path, pseudonym_key_file=str(tmp_path / "pseudonym.key"))
    first = await current_resolver(settings, store, None)
    assert await current_resolver(settings, store, None) is first  # unchanged: not read again
    assert first.resolve("CORP\\jdoe")[1] == "person" and first.person(first.resolve("jdoe")[0]) is not None

    replaced = tmp_path / "people.new"  # an export written beside and moved over the old one
    replaced.write_text(json.dumps({"value": [*GRAPH_PAGE["value"], {"userPrincipalName": "new.hire@corp.example"}]}))
    replaced.replace(path)
    second = await current_resolver(settings, store, None)
    assert second is not first and len(second.people) == len(first.people) + 1

    plain = settings.model_copy(update={"pseudonymise": False})
    assert (await current_resolver(plain, store, None)).resolve("jdoe")[0] == "jane.doe@corp.example"
    renamed = settings.model_copy(
        update={"pseudonymise": False, "identities": IdentitySettings(aliases={"jd": "jdoe"})}
    )
    assert (await current_resolver(renamed, store, None)).resolve("jd")[0] == "jane.doe@corp.example"


def test_directory_check_reads_an_export_against_the_one_in_use(tmp_path: Path) -> None:
    """Before a new export goes live (scoring follows it by itself): names two people claim, time zones not read,
    thin peer groups, and who it adds, drops, moves, re-zones or puts on notice."""
    live = [
        {"id": f"u{i}@corp.example", "department": "Finance", "title": "Analyst", "aliases": [f"u{i}"]}
        for i in range(8)
    ]
    export = [dict(p) for p in live[1:]]
    export[0] |= {"department": "Legal", "timezone": "W. Europe Standard Time"}
    export[1] |= {"notice_date": "2020-01-02", "aliases": ["u2", "U3"]}  # an alias of u3's, as matched
    export[2] |= {"timezone": "Mars/Olympus"}
    export += [
        {"id": "hire@corp.example", "department": "IT", "title": "Engineer"},
        {"id": "svc-backup", "kind": "service"},
    ]
    (tmp_path / "live.json").write_text(json.dumps(live))
    (tmp_path / "export.json").write_text(json.dumps(export))
    (tmp_path / "custodes.yml").write_text(f"scoring:\n  directory: {tmp_path / 'live.json'}\n")
    arguments = ["directory", "check", str(tmp_path / "export.json"), "--config", str(tmp_path / "custodes.yml")]
    result = CliRunner().invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["people"], report["services"], report["departments"], report["thin_groups"]) == (8, 1, 3, 2)
    assert report["watchlists"] == {"departing": 1}
    assert report["shared_names"] == {"u3": ["u2@corp.example", "u3@corp.example"]}
    assert report["unknown_zones"] == ["u3@corp.example: 'Mars/Olympus'"]
    assert report["changes"] == {
        "added": ["hire@corp.example", "svc-backup"],
        "removed": ["u0@corp.example"],
        "moved": ["u1@corp.example"],
        "rezoned": ["u1@corp.example"],
        "on_notice": ["u2@corp.example"],
    }
    table = CliRunner().invoke(app, arguments)
    assert table.exit_code == 0 and "names claimed twice (events under them go to one person): u3:" in table.output
    (tmp_path / "export.json").write_text('[{"id": "u1@corp.example"},')
    broken = CliRunner().invoke(app, arguments)
    assert (
        broken.exit_code == 2 and f"{tmp_path / 'export.json'}:1:" in broken.output and "invalid JSON" in broken.output
    )


def test_a_name_two_people_claim_is_logged_when_scoring_reads_the_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    people = [{"id": "ann@corp.example", "aliases": ["a.lee"]}, {"id": "al@corp.example", "aliases": ["A.Lee"]}]
    resolver = resolver_for(ScoringSettings(directory=written(tmp_path, people), pseudonymise=False), None)
    assert resolver.shared == {"a.lee": {"ann@corp.example", "al@corp.example"}}
    assert resolver.resolve("a.lee")[0] == "al@corp.example"  # the last listed holds it, as before
    assert "1 names in the directory are claimed by two or more people" in caplog.text and "a.lee" in caplog.text


def test_a_configured_alias_works_without_the_directory_holding_its_target() -> None:
    """Once an alias to a person the directory did not hold (or with no directory) failed every record of that name
    with a KeyError."""
    settings = IdentitySettings(aliases={"jdoe-gh": "jdoe@corp.example", "deploy-bot": "svc-deploy"})
    resolver = IdentityResolver([], settings)
    assert resolver.resolve("jdoe-gh") == resolver.resolve("JDoe@corp.example") == ("jdoe@corp.example", "person")
    assert resolver.resolve("deploy-bot") == ("svc-deploy", "service"), "the target's kind, by the service patterns"
