"""`custodes audit ...`: the hash-chained audit log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import typer

from custodes.cli.common import ConfigOption, JsonOption, console, err, run, settings_from, styled
from custodes.cli.root import app

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Recompute the audit chain (HMAC with database.audit_key when set) and compare it with the heads checkpointed
    in database.audit_checkpoint; checkpoint the head when intact. Exit 1 naming the first entry that was changed,
    removed or inserted, or entries removed from the end."""
    from custodes.errors import CustodesError
    from custodes.responder.evidence import checkpoint_objects
    from custodes.responder.registry import ActionError
    from custodes.store import Store
    from custodes.store.checkpoints import verify_checkpointed

    async def work() -> Any:
        settings = settings_from(config)
        locked = settings.database.audit_checkpoint_s3
        objects = checkpoint_objects(settings.database)
        store = await Store.open(settings.database)
        try:
            report, problems = await verify_checkpointed(store, Path(settings.database.audit_checkpoint), objects)
        except ActionError as exc:
            raise CustodesError(f"audit checkpoints in {locked.bucket if locked else '?'}: {exc}") from None
        finally:
            await store.close()
        if not report.ok:
            problems = [
                f"audit entry {report.broken_seq}: {report.reason} ({report.checked} entries before it verified)"
            ]
        if as_json:
            body = {
                "ok": not problems,
                "checked": report.checked,
                "head": {"seq": report.head_seq, "hash": report.head_hash} if report.ok else None,
                "unkeyed": report.unkeyed,
                "keyed": settings.database.audit_key is not None,
                "checkpoint": settings.database.audit_checkpoint,
                "checkpoint_s3": None if objects is None else objects.url,
                "problems": problems,
            }
            sys.stdout.write(orjson.dumps(body).decode() + "\n")
        else:
            for problem in problems:
                err.print(styled("tampered:", "red", f" {problem}"), highlight=False, soft_wrap=True)
            if not problems:
                console.print(
                    f"audit log intact: {report.checked} entries verified; head entry {report.head_seq} "
                    f"({report.head_hash[:16]}) checkpointed in {settings.database.audit_checkpoint}",
                    highlight=False,
                )
            if settings.database.audit_key is None:
                err.print(
                    styled(
                        "warning:",
                        "yellow",
                        " the chain is not keyed: anyone who can write the store could rewrite it whole; set "
                        "database.audit_key (docs/configuration.md)",
                    ),
                    highlight=False,
                    soft_wrap=True,
                )
            elif report.unkeyed:
                err.print(
                    f"note: the first {report.unkeyed} entries predate the audit key (plain SHA-256)", highlight=False
                )
        if problems:
            raise typer.Exit(1)

    run(work)
