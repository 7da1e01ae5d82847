"""Outbound notifications (README): signed, retried delivery of outbox rows to clients.

    models.py    frozen records: a notification, its attempts, a claimed row, a delivery result
    errors.py    the domain errors the REST API maps (target refused, not found, pending, cursor)
    views.py     the camelCase JSON the API shows
    ssrf.py      which target URLs may be called; a resolver that pins checked addresses
    signing.py   the headers of one delivery (Standard Webhooks + the legacy sha256 header)
    schedule.py  the retry ladder with jitter and `Retry-After`
    delivery.py  one HTTP attempt turned into a `DeliveryResult` (never raises for HTTP trouble)

The SQL lives in `service.db.outbox`; the loop that ties it together in
`service.workers.notifier`.
"""
