"""What a new API key may be asked for, the same from the command line and over REST."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.auth.roles import MAX_TEAM, TEAM_NAME, Role

MAX_KEY_NAME = 100


def _printable(value: str) -> str:
    if not value.isprintable() or not value.strip():
        raise ValueError("must be printable text (no control characters), not blank")
    return value


KeyName = Annotated[str, Field(min_length=1, max_length=MAX_KEY_NAME), AfterValidator(_printable)]


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str = Field(pattern=TEAM_NAME.pattern, max_length=MAX_TEAM)
    role: Role
    name: KeyName | None = None
