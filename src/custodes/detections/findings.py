"""Turn detector matches into findings."""

from __future__ import annotations

from collections.abc import Sequence

from custodes.detections.sigma.compiler import CompiledRule
from custodes.model import Event, Finding, stable_id

SIGMA_DETECTOR = "sigma"


def findings_for(event: Event, rules: Sequence[CompiledRule]) -> list[Finding]:
    """One finding per Sigma rule that matched `event`.

    The deduplication key is scoped to the rule and the acting entity, so repeated matches by the same
    actor merge into one finding within the store's window; the finding id also covers the event.
    """
    findings = []
    for rule in rules:
        dedup_key = stable_id(SIGMA_DETECTOR, rule.id, event.actor)
        findings.append(
            Finding(
                id=stable_id("finding", dedup_key, event.id),
                dedup_key=dedup_key,
                detector=SIGMA_DETECTOR,
                rule_id=rule.id,
                title=rule.title,
                severity=rule.level,
                entity=event.actor,
                event_ids=[event.id],
                tags=[tag for tag in rule.tags if tag.lower().startswith("attack.")],
                first_seen=event.time,
                last_seen=event.time,
                source=event.source,
                description=rule.description,
            )
        )
    return findings
