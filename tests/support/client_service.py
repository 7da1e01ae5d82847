"""The service as the client kit's tests run it: a subprocess on a loopback port."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


EXAMPLES = REPO / "client-examples"


@dataclass(frozen=True)
class RunningService:
    base_url: str
    api_key: str
    webhook_secret: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def example_env(self, **extra: str) -> dict[str, str]:
        """The environment an example runs with: service URL, key, secret, import path."""
        env = {
            **os.environ,
            "SERVICE_URL": self.base_url,
            "SERVICE_API_KEY": self.api_key,
            "WEBHOOK_SECRET": self.webhook_secret,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "POLL_MAX_DELAY": "1",
        }
        env.update(extra)
        return env
