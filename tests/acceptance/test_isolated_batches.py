"""One webhook the database will not store never fails the others: its
group-commit batch is split until only that event is left out and refused with a 4xx;
every other event of the batch is stored and acknowledged. An outage is still a 503."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from service.clock import ManualClock
from service.db.engine import Database
from service.db.inbox import InboxRecord
from service.errors import IngestUnavailableError
from service.ingest import InboxWriter
from tests.plugins.database import OpenDatabase
from tests.plugins.service import ServiceUnderTest
from tests.support.inbound_webhooks import event, post, signed, stored, until

POISON = "poison-"

# A row the database itself refuses, the way PostgreSQL refuses a number its numeric type
# cannot hold: a trigger raising a data error for one webhook id.
SQLITE_TRIGGER = f"""
CREATE TRIGGER refuse_poison BEFORE INSERT ON inbound_webhooks
WHEN NEW.webhook_id LIKE '{POISON}%'
BEGIN SELECT RAISE(ABORT, 'poisoned row refused by the database'); END
"""
POSTGRES_TRIGGER = (
    f"""
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.webhook_id LIKE '{POISON}%' THEN
        RAISE EXCEPTION 'poisoned row refused by the database' USING ERRCODE = '22023';
    END IF;
    RETURN NEW;
END $$
""",
    """
CREATE TRIGGER refuse_poison BEFORE INSERT ON inbound_webhooks
FOR EACH ROW EXECUTE FUNCTION refuse_poison()
""",
)


async def refuse_poisoned_rows(database: Database) -> None:
    async with database.transaction() as conn:
        for statement in (SQLITE_TRIGGER,) if database.is_sqlite else POSTGRES_TRIGGER:
            await conn.execute(sa.text(statement))


async def hold_write_lock(database: Database, conn: Any) -> None:
    """Take the inbox's write lock in `conn`'s transaction: the writer waits behind it."""
    if database.is_sqlite:
        await conn.execute(sa.text("DELETE FROM leases WHERE 1 = 0"))
    else:
        await conn.execute(sa.text("LOCK TABLE inbound_webhooks IN EXCLUSIVE MODE"))


async def test_a_poisoned_webhook_among_100_is_refused_alone(
    service: ServiceUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    database = service.resources.database
    writer = service.resources.inbox
    assert writer is not None
    await refuse_poisoned_rows(database)
    valid = [signed(service, event(f"inst{n:04d}")) for n in range(100)]
    poisoned = signed(service, event("inst-poison"), msg_id=f"{POISON}1")
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
        database.transaction() as conn,
    ):
        # All 101 queue up behind the lock, so the poisoned one shares a batch with others.
        await hold_write_lock(database, conn)

        async def send(raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
            url = f"{service.base_url}/webhooks/novita"
            async with http.post(url, data=raw, headers=headers) as response:
                return response.status, await response.json()

        requests = [asyncio.create_task(send(*signed_)) for signed_ in valid[:50]]
        requests.append(asyncio.create_task(send(*poisoned)))
        requests += [asyncio.create_task(send(*signed_)) for signed_ in valid[50:]]
        await until(lambda: writer.submitted == 101)
        await conn.rollback()
        results = await asyncio.gather(*requests)

    bad_status, bad_body = results.pop(50)
    assert bad_status == 400, bad_body
    assert bad_body["error"]["code"] == "UNSTORABLE_EVENT"
    assert "poisoned row refused by the database" in bad_body["error"]["message"]
    assert [status for status, _ in results] == [200] * 100
    assert all(body == {"received": True, "duplicate": False} for _, body in results)
    rows = await stored(service)
    assert sorted(row["webhook_id"] for row in rows) == sorted(h["webhook-id"] for _, h in valid)
    refusals = [r for r in caplog.records if "ingest.event_refused" in str(r.msg)]
    assert len(refusals) == 1 and refusals[0].exc_info is None

    # The sender's retry of the valid ones is a duplicate; of the poisoned one, refused again.
    assert (await post(service, *valid[0]))[1]["duplicate"] is True
    assert (await post(service, *poisoned))[0] == 400


@pytest.mark.postgres
async def test_a_number_postgresql_cannot_store_fails_only_its_own_webhook(
    postgres_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """`1e-20000` is valid JSON (a float parser reads 0.0), but no jsonb can hold it."""
    caplog.set_level(logging.INFO)
    writer = InboxWriter(postgres_database, ManualClock(), min_overlap=1_000)
    writer.start()
    try:
        records = [
            InboxRecord(f"ok-{n}", "instance.status_changed", "i", '{"type":"t","data":{}}')
            for n in range(20)
        ]
        records.insert(7, InboxRecord("bad", "t", "i", '{"type":"t","data":{"n":1e-20000}}'))
        results = await asyncio.gather(
            *(writer.submit(record) for record in records), return_exceptions=True
        )
    finally:
        await writer.stop()
    refused = results.pop(7)
    assert isinstance(refused, Exception) and getattr(refused, "code", "") == "UNSTORABLE_EVENT"
    assert "numeric" in str(refused)
    assert results == [True] * 20
    assert writer.stored == 20 and writer.refused == 1


@pytest.mark.postgres
async def test_an_outage_fails_the_batch_with_503_and_one_line(
    postgres_url: str, caplog: pytest.LogCaptureFixture, open_database: OpenDatabase
) -> None:
    """Nothing listens where the database should be: no event is refused as bad, every
    one is answered 503 (the senders retry), and the log says so in one line per batch."""
    unreachable = sa.make_url(postgres_url).set(port=1).render_as_string(hide_password=False)
    database = open_database(unreachable)
    writer = InboxWriter(database, ManualClock())
    writer.start()
    try:
        records = [InboxRecord(f"ok-{n}", "t", "i", '{"type":"t","data":{}}') for n in range(5)]
        results = await asyncio.gather(
            *(writer.submit(record) for record in records), return_exceptions=True
        )
    finally:
        await writer.stop()
    assert all(isinstance(result, IngestUnavailableError) for result in results)
    lines = [r for r in caplog.records if "ingest." in str(r.msg)]
    assert lines and all("ingest.database_unavailable" in str(r.msg) for r in lines)
    assert all(r.exc_info is None for r in lines)
