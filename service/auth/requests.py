"""What a new API key may be asked for, the same from the command line and over REST."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from service.auth.roles import MAX_TEAM, TEAM_NAME, Role

MAX_KEY_NAME = 100
# No control characters, and something other than spaces (the OpenAPI schema says so too).
KEY_NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"
KeyName = Annotated[str, Field(min_length=1, max_length=MAX_KEY_NAME, pattern=KEY_NAME_PATTERN)]


class NewKeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    team: str = Field(pattern=TEAM_NAME.pattern, max_length=MAX_TEAM)
    role: Role
    name: KeyName | None = None
