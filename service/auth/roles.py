"""Roles, principals and what each role may do (DESIGN: teams and roles).

viewer    reads its team's instances, events, notifications and reports
operator  also creates and acts on its team's instances, redelivers its notifications
admin     every team; manages keys and webhook targets; cross-team reports
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from service.errors import ForbiddenError


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
ROLES = tuple(role.value for role in Role)
MAX_TEAM = 64
# Team names travel in URLs, logs and CSV: letters, digits, `.`, `_`, `-`.
TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# No team is named this (a name starts with a letter or digit): a filter that finds nothing.
NO_TEAM = "-"
# The same as a query parameter, where empty means not given (for the OpenAPI document).
TEAM_QUERY_PATTERN = "^([A-Za-z0-9][A-Za-z0-9._-]{0,63})?$"
TEAM_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def valid_team(team: str) -> bool:
    return TEAM_NAME.fullmatch(team) is not None


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: its key's public id, team and role."""

    key_id: str
    team: str
    role: Role
    # What scopes its Idempotency-Keys, when not its key id (the keys in API_KEYS).
    scope_id: str | None = None

    def has(self, role: Role) -> bool:
        return _RANK[self.role] >= _RANK[role]

    def require(self, role: Role) -> None:
        """403 naming the role needed, unless this principal has it (or a higher one)."""
        if not self.has(role):
            raise ForbiddenError(
                f"this needs the {role.value} role (or higher); this key is a "
                f"{self.role.value} key of team {self.team!r}",
                requiredRole=role.value,
                role=self.role.value,
            )

    @property
    def scope(self) -> str | None:
        """The one team this principal sees, or None (an admin sees every team)."""
        return None if self.role is Role.ADMIN else self.team

    def sees(self, team: str) -> bool:
        return self.role is Role.ADMIN or team == self.team
