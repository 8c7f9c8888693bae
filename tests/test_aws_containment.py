"""AWS containment actions against moto in server mode, over real HTTP with the real boto3 client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from conftest import moto_client
from custodes.config import ResponderSettings
from custodes.connectors.retry import RetryPolicy
from custodes.responder import ActionContext, ActionError, aws, catalog

KEY_VARIABLE = "CUSTODES_TEST_AWS_KEY_ID"
SECRET_VARIABLE = "CUSTODES_TEST_AWS_SECRET"


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aws, "retry_policy", RetryPolicy(attempts=2, max_wait=0.01, backoff=0.001))


@pytest.fixture
async def iam(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh moto IAM, and a boto3 client the test inspects it with."""
    async with aiohttp.ClientSession() as session, session.post(f"{moto_url}/moto-api/reset") as answer:
        assert answer.status == 200
    monkeypatch.setenv(KEY_VARIABLE, "testing")
    monkeypatch.setenv(SECRET_VARIABLE, "testing-secret")
    return moto_client("iam", moto_url)


def settings_for(endpoint: str) -> ResponderSettings:
    return ResponderSettings.model_validate(
        {
            "aws": {
                "region": "us-east-1",
                "endpoint_url": endpoint,
                "access_key_id": f"env:{KEY_VARIABLE}",
                "secret_access_key": f"env:{SECRET_VARIABLE}",
            },
            "protected_accounts": ["break-glass", "OrganizationAccountAccessRole"],
        }
    )


async def run(
    endpoint: str, name: str, *, key: str = "run-1/step-1", dry_run: bool = False, **arguments: Any
) -> dict[str, Any]:
    spec = catalog.get(name)
    async with aiohttp.ClientSession() as http:
        ctx = ActionContext(settings=settings_for(endpoint), http=http, idempotency_key=key, dry_run=dry_run)
        return await spec.fn(ctx, **spec.validate(arguments))


def key_states(iam: Any, user: str) -> dict[str, str]:
    return {k["AccessKeyId"]: k["Status"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]}


def test_actions_register_with_their_metadata() -> None:
    deactivate = catalog.get("aws.deactivate_access_keys")
    assert (deactivate.destructive, deactivate.undo, deactivate.target) == (True, "aws.reactivate_access_keys", "user")
    assert catalog.get("aws.reactivate_access_keys").undo == "aws.deactivate_access_keys"
    delete = catalog.get("aws.delete_login_profile")
    assert (delete.destructive, delete.undo) == (True, "aws.restore_login_profile")
    assert catalog.get("aws.restore_login_profile").undo == "aws.delete_login_profile"
    assert catalog.get("aws.attach_quarantine_policy").undo == "aws.detach_quarantine_policy"
    assert catalog.get("aws.detach_quarantine_policy").undo == "aws.attach_quarantine_policy"
    revoke = catalog.get("aws.revoke_role_sessions")
    assert revoke.destructive and revoke.target == "role"
    assert revoke.describe({"role": "app"}).startswith("deny every session of IAM role app")


async def test_keys_deactivate_and_undo_restores_exactly_those(iam: Any, moto_url: str) -> None:
    iam.create_user(UserName="mallory")
    live = iam.create_access_key(UserName="mallory")["AccessKey"]["AccessKeyId"]
    retired = iam.create_access_key(UserName="mallory")["AccessKey"]["AccessKeyId"]
    iam.update_access_key(UserName="mallory", AccessKeyId=retired, Status="Inactive")

    done = await run(moto_url, "aws.deactivate_access_keys", user="mallory")
    assert done["changed"] is True and done["deactivated"] == [live]
    assert key_states(iam, "mallory") == {live: "Inactive", retired: "Inactive"}
    tags = iam.list_user_tags(UserName="mallory")["Tags"]
    assert tags == [{"Key": aws.KEYS_TAG, "Value": live}]

    replay = await run(moto_url, "aws.deactivate_access_keys", user="mallory")
    assert replay["changed"] is False and replay["deactivated"] == []

    undone = await run(moto_url, "aws.reactivate_access_keys", user="mallory")
    assert undone["changed"] is True and undone["reactivated"] == [live]
    assert key_states(iam, "mallory") == {live: "Active", retired: "Inactive"}, "the retired key stays retired"
    assert iam.list_user_tags(UserName="mallory")["Tags"] == []

    again = await run(moto_url, "aws.reactivate_access_keys", user="mallory")
    assert again["changed"] is False and "access_key_ids" in again["note"]

    chosen = await run(
        moto_url, "aws.reactivate_access_keys", user="mallory", access_key_ids=[retired, "AKIAMISSING0000000"]
    )
    assert chosen["reactivated"] == [retired] and chosen["not_found"] == ["AKIAMISSING0000000"]
    assert key_states(iam, "mallory") == {live: "Active", retired: "Active"}


async def test_delete_login_profile_and_restore_with_a_new_password_held_in_secrets_manager(
    iam: Any, moto_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto neither keeps PasswordResetRequired from CreateLoginProfile nor shows passwords: read them on the wire.
    sent: list[dict[str, Any]] = []
    make_client = aws._client

    def watched(*args: Any) -> Any:
        client = make_client(*args)
        client.meta.events.register(
            "provide-client-params.iam.CreateLoginProfile", lambda params, **_: sent.append(params)
        )
        return client

    monkeypatch.setattr(aws, "_client", watched)
    iam.create_user(UserName="mallory")
    iam.create_login_profile(UserName="mallory", Password="Correct-Horse-9!")
    iam.update_account_password_policy(MinimumPasswordLength=32, RequireSymbols=True, RequireNumbers=True)

    done = await run(moto_url, "aws.delete_login_profile", user="mallory")
    assert done == {"changed": True, "user": "mallory", "login_profile": False}
    with pytest.raises(ClientError) as gone:
        iam.get_login_profile(UserName="mallory")
    assert gone.value.response["Error"]["Code"] == "NoSuchEntity"
    assert "custodes:login-profile-deleted" in {t["Key"] for t in iam.list_user_tags(UserName="mallory")["Tags"]}
    assert (await run(moto_url, "aws.delete_login_profile", user="mallory"))["changed"] is False

    restored = await run(moto_url, "aws.restore_login_profile", user="mallory")
    assert restored["changed"] is True and restored["password_reset_required"] is True
    iam.get_login_profile(UserName="mallory")
    manager = moto_client("secretsmanager", moto_url)
    stored = manager.get_secret_value(SecretId=restored["password_secret"])
    password = stored["SecretString"]
    assert stored["Name"] == "custodes/console-password/mallory" and len(password) >= 32
    assert sent == [{"UserName": "mallory", "Password": password, "PasswordResetRequired": True}]
    assert any(c.isupper() for c in password) and any(c.isdigit() for c in password)
    assert any(c in "!@#$%^&*()_+-=[]{}|'" for c in password)
    assert password not in str(restored) and password not in caplog.text
    assert iam.list_user_tags(UserName="mallory")["Tags"] == []

    replay = await run(moto_url, "aws.restore_login_profile", user="mallory")
    assert (replay["changed"], replay["login_profile"]) == (False, True)
    assert manager.get_secret_value(SecretId=restored["password_secret"])["SecretString"] == password

    # A second cycle puts a new version in the same secret.
    await run(moto_url, "aws.delete_login_profile", user="mallory")
    again = await run(moto_url, "aws.restore_login_profile", user="mallory")
    assert again["password_secret"] == restored["password_secret"]
    assert manager.get_secret_value(SecretId=restored["password_secret"])["SecretString"] != password


async def test_restore_gives_no_console_access_custodes_did_not_remove(iam: Any, moto_url: str) -> None:
    iam.create_user(UserName="svc-deploy")  # programmatic only: never had a console password
    refused = await run(moto_url, "aws.restore_login_profile", user="svc-deploy")
    assert refused["changed"] is False and "did not delete" in refused["note"]
    with pytest.raises(ClientError):
        iam.get_login_profile(UserName="svc-deploy")


async def test_quarantine_policy_attached_and_removed(iam: Any, moto_url: str) -> None:
    iam.create_user(UserName="mallory")

    done = await run(moto_url, "aws.attach_quarantine_policy", user="arn:aws:iam::123456789012:user/ops/mallory")
    assert done == {"changed": True, "user": "mallory", "policy": "CustodesQuarantine"}
    assert iam.list_user_policies(UserName="mallory")["PolicyNames"] == ["CustodesQuarantine"]
    document = iam.get_user_policy(UserName="mallory", PolicyName="CustodesQuarantine")["PolicyDocument"]
    assert document["Statement"] == [{"Sid": "CustodesQuarantine", "Effect": "Deny", "Action": "*", "Resource": "*"}]

    assert (await run(moto_url, "aws.attach_quarantine_policy", user="mallory"))["changed"] is False

    removed = await run(moto_url, "aws.detach_quarantine_policy", user="mallory")
    assert removed["changed"] is True
    assert iam.list_user_policies(UserName="mallory")["PolicyNames"] == []
    assert (await run(moto_url, "aws.detach_quarantine_policy", user="mallory"))["changed"] is False


async def test_revoke_role_sessions_denies_older_tokens(iam: Any, moto_url: str) -> None:
    iam.create_role(RoleName="app", AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}')
    before = datetime.now(UTC).replace(microsecond=0)

    done = await run(moto_url, "aws.revoke_role_sessions", role="app")
    assert done["changed"] is True and done["policy"] == "AWSRevokeOlderSessions"
    document = iam.get_role_policy(RoleName="app", PolicyName="AWSRevokeOlderSessions")["PolicyDocument"]
    [statement] = document["Statement"]
    assert (statement["Effect"], statement["Action"], statement["Resource"]) == ("Deny", ["*"], ["*"])
    cutoff = statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"]
    assert cutoff == done["revoked_before"]
    issued = datetime.strptime(cutoff, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= issued <= datetime.now(UTC) + timedelta(seconds=1)

    replay = await run(moto_url, "aws.revoke_role_sessions", role="app")
    assert replay == {"changed": False, "role": "app", "policy": "AWSRevokeOlderSessions", "revoked_before": cutoff}

    later = await run(moto_url, "aws.revoke_role_sessions", role="app", key="run-2/step-1")
    assert later["changed"] is True


async def test_protected_accounts_are_refused(iam: Any, moto_url: str) -> None:
    iam.create_user(UserName="break-glass")
    key = iam.create_access_key(UserName="break-glass")["AccessKey"]["AccessKeyId"]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("aws.deactivate_access_keys", {"user": "Break-Glass"}),
        ("aws.attach_quarantine_policy", {"user": "arn:aws:iam::123456789012:user/break-glass"}),
        ("aws.revoke_role_sessions", {"role": "OrganizationAccountAccessRole"}),
    ]
    for name, arguments in calls:
        with pytest.raises(ActionError) as refused:
            await run(moto_url, name, **arguments)
        assert refused.value.code == "protected_account"
    assert key_states(iam, "break-glass") == {key: "Active"}
    assert iam.list_user_policies(UserName="break-glass")["PolicyNames"] == []


async def test_dry_run_makes_no_call(iam: Any, moto_url: str) -> None:
    iam.create_user(UserName="mallory")
    key = iam.create_access_key(UserName="mallory")["AccessKey"]["AccessKeyId"]
    nowhere = "http://127.0.0.1:9"  # nothing listens: any call would fail
    calls: list[tuple[str, dict[str, Any]]] = [
        ("aws.deactivate_access_keys", {"user": "mallory"}),
        ("aws.delete_login_profile", {"user": "mallory"}),
        ("aws.restore_login_profile", {"user": "mallory"}),
        ("aws.attach_quarantine_policy", {"user": "mallory"}),
        ("aws.revoke_role_sessions", {"role": "app"}),
    ]
    for name, arguments in calls:
        for endpoint in (nowhere, moto_url):
            planned = await run(endpoint, name, dry_run=True, **arguments)
            assert planned["changed"] is False and planned["dry_run"] is True and planned["would"]
    assert key_states(iam, "mallory") == {key: "Active"}
    assert iam.list_user_policies(UserName="mallory")["PolicyNames"] == []


async def test_aws_errors_carry_the_aws_code(iam: Any, moto_url: str) -> None:
    with pytest.raises(ActionError) as unknown:
        await run(moto_url, "aws.deactivate_access_keys", user="nobody")
    assert unknown.value.code == "NoSuchEntity" and not unknown.value.retryable
    with pytest.raises(ActionError) as no_role:
        await run(moto_url, "aws.revoke_role_sessions", role="nothing")
    assert no_role.value.code == "NoSuchEntity"

    with pytest.raises(ActionError) as unreachable:
        await run("http://127.0.0.1:9", "aws.attach_quarantine_policy", user="mallory")
    assert unreachable.value.code == "connection_error" and unreachable.value.retryable
    assert "testing-secret" not in str(unreachable.value)


async def test_not_configured() -> None:
    async with aiohttp.ClientSession() as http:
        ctx = ActionContext(settings=ResponderSettings(), http=http, idempotency_key="k")
        with pytest.raises(ActionError, match=r"responder\.aws") as missing:
            await catalog.get("aws.revoke_role_sessions").fn(ctx, role="app")
    assert missing.value.code == "not_configured"
