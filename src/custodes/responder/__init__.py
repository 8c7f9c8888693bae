"""Response actions: the catalog of registered actions and the modules whose actions register when imported."""

from custodes.responder import aws, case, cases, entra, evidence, mail, notify, okta, ticket
from custodes.responder.registry import ActionContext, ActionError, registry

catalog = registry
"""Every action Custodes ships, registered by importing this package."""

__all__ = [
    "ActionContext",
    "ActionError",
    "aws",
    "case",
    "cases",
    "catalog",
    "entra",
    "evidence",
    "mail",
    "notify",
    "okta",
    "ticket",
]
