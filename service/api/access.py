"""What a request's key may see: its principal, and the lifecycle scoped to its team.

Another team's instance is answered exactly like one that does not exist (404), so a key
learns nothing about other teams' instances, in reads, actions, lists and streams alike.
"""

from __future__ import annotations

from starlette.requests import Request

from service.auth.roles import Principal
from service.lifecycle import Lifecycle
from service.resources import Resources


def principal_of(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


def lifecycle_for(request: Request) -> Lifecycle:
    """The lifecycle as this request's key sees it: its team only (admins: every team),
    and every event it causes records the key id."""
    resources: Resources = request.state.resources
    principal = principal_of(request)
    return Lifecycle(resources, team=principal.scope, actor=principal.key_id)
