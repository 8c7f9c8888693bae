"""`custodes evidence ...`: verify and list preserved evidence bundles."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from custodes.cli.common import ConfigOption, JsonOption, console, days_within, err, run, settings_from, styled
from custodes.cli.root import app
from custodes.errors import CustodesError

evidence_app = typer.Typer(help="Preserved evidence bundles: verify and list.", no_args_is_help=True)
app.add_typer(evidence_app, name="evidence")


@evidence_app.command("verify")
def evidence_verify(
    bundle: Annotated[str, typer.Argument(help="A bundle directory, or s3://bucket/prefix.")],
    by: Annotated[str | None, typer.Option("--by", help="Who is verifying (default: the login name).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why, for the chain of custody.")] = "verification",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Prove a bundle unchanged: recompute every SHA-256 against its manifest (and the store's record of it)
    and check its chain of custody; record this access in it. Exit 1 naming each file that changed."""
    from custodes.responder.evidence import open_bundle, verify_recorded
    from custodes.responder.registry import ActionError
    from custodes.store import Store

    async def work() -> Any:
        settings = settings_from(config)
        try:
            location = open_bundle(bundle, settings.responder.evidence)
        except ActionError as exc:  # an address that names no bundle: a file, or s3:// without a bucket
            raise CustodesError(str(exc), hint="name a bundle directory or s3://bucket/prefix") from None
        store = await Store.open(settings.database)
        try:
            report = await verify_recorded(store, location, who=by or getpass.getuser(), why=reason)
        finally:
            await store.close()
        if as_json:
            body = {
                "bundle": report.url,
                "ok": report.ok,
                "found": report.found,
                "manifest_sha256": report.manifest_sha256,
                "checked": report.checked,
                "custody_records": report.custody,
                "problems": report.problems,
            }
            console.print_json(orjson.dumps(body).decode())
        elif report.ok:
            console.print(
                f"bundle intact: {len(report.checked)} files match manifest {report.manifest_sha256}; "
                f"chain of custody of {report.custody} records verified",
                highlight=False,
            )
        else:
            label = "tampered" if report.found else "not found"
            for problem in report.problems:
                err.print(styled(f"{label}:", "red", f" {problem}"), highlight=False, soft_wrap=True)
        if not report.ok:
            raise typer.Exit(1)

    run(work)


@evidence_app.command("list")
def evidence_list(
    entity: Annotated[str | None, typer.Option("--entity", help="Only this entity's bundles.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evidence bundles recorded in the store, newest first."""
    from custodes.responder.evidence import list_bundles
    from custodes.store import Store

    async def work() -> Any:
        store = await Store.open(settings_from(config).database)
        try:
            async with store.transaction() as tx:
                rows = await list_bundles(tx, entity=entity, limit=limit)
        finally:
            await store.close()
        if as_json:
            console.print_json(orjson.dumps(rows, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS).decode())
            return
        table = Table("bundle", "entity", "window", "reason", "location", "created", "by")
        for row in rows:
            window = f"{row['since']:%Y-%m-%d %H:%M} .. {row['until']:%Y-%m-%d %H:%M}"
            table.add_row(
                row["id"][:12],
                row["entity"],
                window,
                row["reason"],
                row["location"],
                f"{row['created_at']:%Y-%m-%d %H:%M:%S}",
                row["created_by"],
            )
        console.print(table)

    run(work)


@evidence_app.command("prune")
def evidence_prune(
    older_than_days: Annotated[
        float, typer.Option("--older-than-days", callback=days_within, help="Delete bundles older than this.")
    ],
    by: Annotated[str | None, typer.Option("--by", help="Who is deleting (default: the login name).")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retention: delete bundles older than the given age, except those a case holds under legal hold (each
    refusal is written in the bundle's chain of custody). Exit 1 when a delete failed."""
    from datetime import timedelta

    from custodes.cases.hold import prune_evidence
    from custodes.store import Store

    async def work() -> Any:
        settings = settings_from(config)
        store = await Store.open(settings.database)
        try:
            who = f"cli:{by or getpass.getuser()}"
            report = await prune_evidence(store, settings.responder.evidence, timedelta(days=older_than_days), who)
        finally:
            await store.close()
        if as_json:
            body = {"deleted": report.deleted, "refused": report.refused, "failed": report.failed}
            console.print_json(orjson.dumps(body).decode())
        else:
            console.print(f"deleted {len(report.deleted)} bundles", highlight=False)
            for ident, cases in report.refused.items():
                console.print(f"kept {ident}: legal hold (case {', '.join(cases)})", highlight=False)
            for ident, problem in report.failed.items():
                err.print(styled("not deleted:", "red", f" {ident}: {problem}"), highlight=False, soft_wrap=True)
        if report.failed:
            raise typer.Exit(1)

    run(work)
