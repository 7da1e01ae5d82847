"""Rejected webhooks are counted without a write per request: an unauthenticated flood
cannot queue on the database's write lock, and the counts still reach the reliability
report (up to a second late, written by the inbox writer in one transaction)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from service.db.models import webhook_tallies
from tests.plugins.service import ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed, stored


async def rejection_counts(service: ServiceUnderTest) -> dict[str, int]:
    async with service.resources.database.read() as conn:
        rows = await conn.execute(
            sa.select(webhook_tallies.c.outcome, sa.func.sum(webhook_tallies.c.count)).group_by(
                webhook_tallies.c.outcome
            )
        )
        return {outcome: int(count) for outcome, count in rows}


async def test_rejections_are_answered_while_another_writer_holds_the_lock(
    service: ServiceUnderTest,
) -> None:
    database = service.resources.database
    raw, headers = signed(service, event())
    forged = {**headers, "webhook-signature": "v1,AAAA"}
    junk_raw, junk_headers = signed(service, b"{not json")
    async with database.transaction() as conn:
        if database.is_sqlite:
            await conn.execute(sa.text("DELETE FROM leases WHERE 1 = 0"))
        else:
            await conn.execute(sa.text("LOCK TABLE webhook_tallies IN EXCLUSIVE MODE"))
        # Answered while the lock is still held: none of them waits for a write. (Bounded
        # well below the busy timeout a per-request write would wait out.)
        async with asyncio.timeout(3):
            answers = await asyncio.gather(
                *(post(service, raw, forged) for _ in range(40)),
                *(post(service, junk_raw, junk_headers) for _ in range(10)),
            )
        assert [status for status, _ in answers] == [401] * 40 + [400] * 10
        await conn.rollback()

    expected = {"invalid_signature": 40, "malformed_request": 10}
    async with asyncio.timeout(5):  # written within about a second of the lock's release
        # Polling the table: the write happens in the writer's own time.
        while await rejection_counts(service) != expected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await stored(service) == []


async def test_counts_not_yet_written_are_written_when_the_writer_stops(
    service: ServiceUnderTest,
) -> None:
    writer = service.resources.inbox
    assert writer is not None
    raw, headers = signed(service, event())
    for _ in range(3):
        assert (await post(service, raw, {**headers, "webhook-signature": "v1,AAAA"}))[0] == 401
    await writer.stop()  # the fixture's own stop afterwards finds nothing left to do
    assert writer.pending_rejections == 0
    assert await rejection_counts(service) == {"invalid_signature": 3}
