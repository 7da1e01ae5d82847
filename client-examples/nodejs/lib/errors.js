// Every error the client throws on purpose. `ServiceAPIError` carries what the service
// said: HTTP `status`, its error `code`, `message`, `details`, `requestId`, `retryAfter`.

export class LifecycleClientError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** No HTTP answer: connection refused or reset, or no answer in time. */
export class TransportError extends LifecycleClientError {}

export class ServiceAPIError extends LifecycleClientError {
  constructor(message, { status, code, details = null, requestId = null, retryAfter = null }) {
    super(message);
    Object.assign(this, { status, code, details, requestId, retryAfter });
  }
}
export class BadRequestError extends ServiceAPIError {}
export class ValidationError extends BadRequestError {
  /** One `{field, message, value?}` entry per invalid field. */
  get fields() {
    return Array.isArray(this.details?.fields) ? this.details.fields : [];
  }
}
export class AuthenticationError extends ServiceAPIError {}
export class PermissionDeniedError extends ServiceAPIError {}
export class NotFoundError extends ServiceAPIError {}
export class ConflictError extends ServiceAPIError {}
export class PayloadTooLargeError extends ServiceAPIError {}
export class RateLimitedError extends ServiceAPIError {}
export class ServerError extends ServiceAPIError {}
export class UnavailableError extends ServerError {}

/** `waitUntil` gave up; `instance` is the last state seen (or null). */
export class WaitError extends LifecycleClientError {
  constructor(message, instance) {
    super(message);
    this.instance = instance;
  }
}
export class TerminalStatusError extends WaitError {}
export class InstanceFailedError extends TerminalStatusError {}
export class WaitTimeoutError extends WaitError {}

export class WebhookVerificationError extends LifecycleClientError {}
export class InvalidSignatureError extends WebhookVerificationError {}
export class StaleTimestampError extends WebhookVerificationError {}
export class MalformedWebhookError extends WebhookVerificationError {}

const BY_STATUS = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: PayloadTooLargeError,
  422: ValidationError,
  429: RateLimitedError,
  503: UnavailableError,
};

export function parseRetryAfter(value) {
  if (value == null) return null;
  const seconds = Number(value.trim());
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** The error for an answer with status >= 400; any body is accepted (a proxy may send HTML). */
export function errorFromResponse(status, text, headers) {
  const Kind = BY_STATUS[status] ?? (status >= 500 ? ServerError : ServiceAPIError);
  let error = {};
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed.error === 'object' && parsed.error !== null) error = parsed.error;
  } catch {
    // not JSON: keep the text as the message
  }
  const message =
    typeof error.message === 'string' ? error.message : text.trim().slice(0, 200) || `HTTP ${status}`;
  return new Kind(message, {
    status,
    code: typeof error.code === 'string' ? error.code : `HTTP_${status}`,
    details: error.details ?? null,
    requestId: typeof error.requestId === 'string' ? error.requestId : headers.get('x-request-id'),
    retryAfter: parseRetryAfter(headers.get('retry-after')),
  });
}
