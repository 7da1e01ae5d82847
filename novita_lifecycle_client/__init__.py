"""A typed async client of the novita-lifecycle REST API, and a webhook receiver helper.

Why a package of its own, next to `service/` rather than inside it: clients run in other
processes and images than the service and should not pull in its server stack (Starlette,
SQLAlchemy, database drivers, pydantic-settings). This package needs only aiohttp and the
standard library, never imports `service`, and the service never imports it, so it can be
vendored or published alone; it ships in the same distribution today so that the API and
its client change together and are tested together (tests/client run both).

    from novita_lifecycle_client import LifecycleClient, NotFoundError

    async with LifecycleClient("http://127.0.0.1:8080", api_key) as client:
        instance = await client.create(name="trainer", product_name="RTX 4090 24GB",
                                       template_id=212, idempotency_key="trainer-1")
        instance = await client.wait_until(instance["id"], "ready", timeout=900)
        plan = await client.plan(name="x", product_name="RTX 4090 24GB", template_id=212)

Receiving notifications: `novita_lifecycle_client.webhooks` (`verify`, `WebhookReceiver`,
`aiohttp_handler`). Exceptions: `novita_lifecycle_client.errors` (its docstring draws the
hierarchy).
"""

from novita_lifecycle_client.backoff import Backoff
from novita_lifecycle_client.client import LifecycleClient, Page
from novita_lifecycle_client.errors import (
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InstanceFailedError,
    LifecycleClientError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    ServiceAPIError,
    TerminalStatusError,
    TransportError,
    UnavailableError,
    ValidationError,
    WaitError,
    WaitTimeoutError,
    WebhookVerificationError,
)
from novita_lifecycle_client.models import (
    Instance,
    InstanceEvent,
    Notification,
    NotificationAttempt,
    NotificationDetail,
    Placement,
    Plan,
    PlanCandidate,
    StreamEvent,
)
from novita_lifecycle_client.webhooks import (
    InvalidSignatureError,
    MalformedWebhookError,
    RecentIds,
    StaleTimestampError,
    WebhookEvent,
    WebhookReceiver,
    WebhookVerifier,
    aiohttp_handler,
    verify,
)

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Backoff",
    "BadRequestError",
    "ConflictError",
    "Instance",
    "InstanceEvent",
    "InstanceFailedError",
    "InvalidSignatureError",
    "LifecycleClient",
    "LifecycleClientError",
    "MalformedWebhookError",
    "NotFoundError",
    "Notification",
    "NotificationAttempt",
    "NotificationDetail",
    "Page",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Placement",
    "Plan",
    "PlanCandidate",
    "RateLimitedError",
    "RecentIds",
    "ServerError",
    "ServiceAPIError",
    "StaleTimestampError",
    "StreamEvent",
    "TerminalStatusError",
    "TransportError",
    "UnavailableError",
    "ValidationError",
    "WaitError",
    "WaitTimeoutError",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookVerificationError",
    "WebhookVerifier",
    "__version__",
    "aiohttp_handler",
    "verify",
]
