"""`novita-lifecycle check-novita`: what this account's Novita API does where the docs are
ambiguous, found out with read-only calls before the service is trusted with money.

Each check names an assumption the client makes, what the API answered, whether that is
the documented reading (OK) or another one (DIFFERS), and what the service does about it.
A difference the client cannot handle (the key refused, a base URL that is not the GPU API,
a catalogue nothing can be chosen from, a missing instance not recognised as missing) is
`blocking`: the command exits 1.

Only GET requests are sent: clusters, products (also once with an invalid `gpuNum`, for an
error body), templates, a template and an instance that do not exist, and the first list
pages (sizes of 1, so two pages tell the page base as soon as the account has one
instance), once more with a `name` filter. The API key is never printed; answers are passed through
the client's redaction before any of their text is shown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from pydantic import ValidationError

from service.novita.errors import (
    HttpFailure,
    NovitaNotFoundError,
    reason_of,
    redact,
    translate,
)
from service.novita.schemas import Cluster, Product

OK = "OK"
DIFFERS = "DIFFERS"
UNKNOWN = "UNKNOWN"
# Ids that no account has: a template and an instance (16 hex, the real shape).
MISSING_TEMPLATE_ID = "999999999"
MISSING_INSTANCE_ID = "0000000000000000"


@dataclass(frozen=True, slots=True)
class Finding:
    assumption: str
    seen: str
    verdict: str  # OK, DIFFERS or UNKNOWN
    handling: str  # what the service will do
    blocking: bool = False  # a difference the client cannot handle


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    data: Any  # the parsed JSON, or None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class _Reader:
    """Plain GETs with the key: the check looks at Novita's raw answers, not the client's."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._key = api_key

    async def get(self, path: str, **params: str) -> Answer:
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        async with self._session.get(self._base + path, params=params, headers=headers) as r:
            body = await r.read()
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError:
            data = None
        return Answer(r.status, body, data)


def safe_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to print."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


async def run_checks(
    base_url: str, api_key: str, *, request_timeout: float = 30.0
) -> list[Finding]:
    """Every check, in order; stops after the first one when the API cannot be used at all."""
    client_timeout = aiohttp.ClientTimeout(total=request_timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        reader = _Reader(session, base_url, api_key)
        checker = _Checker(reader, api_key)
        try:
            return await checker.run()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            seen = redact(f"{type(exc).__name__}: {exc}", (api_key,))[:200]
            return [
                *checker.findings,
                Finding(
                    "Novita answers at the base URL",
                    seen,
                    DIFFERS,
                    "nothing works until Novita can be reached: check NOVITA_API_BASE_URL",
                    blocking=True,
                ),
            ]


class _Checker:
    def __init__(self, reader: _Reader, api_key: str) -> None:
        self._get = reader.get
        self._key = api_key
        self.findings: list[Finding] = []

    def _add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def _text(self, answer: Answer, limit: int = 120) -> str:
        text = answer.body.decode("utf-8", errors="replace").strip().replace("\n", " ")
        return redact(text[:limit], (self._key,))

    async def run(self) -> list[Finding]:
        clusters = await self._clusters()
        if clusters is None:
            return self.findings
        await self._products(clusters)
        await self._templates()
        await self._missing_template()
        await self._pages()
        await self._missing_instance()
        return self.findings

    # -- reachability and clusters --------------------------------------------------------

    async def _clusters(self) -> list[Cluster] | None:
        answer = await self._get("/clusters")
        if answer.status in (401, 403):
            self._add(Finding(
                "The API key is accepted",
                f"{answer.status} {self._reason(answer) or ''}".strip(),
                DIFFERS,
                "every call fails: check NOVITA_API_KEY",
                blocking=True,
            ))
            return None
        items = answer.data.get("data") if isinstance(answer.data, Mapping) else None
        if not answer.ok or not isinstance(items, list):
            self._add(Finding(
                "The base URL is Novita's GPU API v1 (GET /clusters → {data: [...]})",
                f"{answer.status}: {self._text(answer)}",
                DIFFERS,
                "nothing works: check NOVITA_API_BASE_URL",
                blocking=True,
            ))
            return None
        self._add(Finding("The API key is accepted", f"{answer.status}", OK, "uses it"))
        clusters = _parse_each(Cluster, items)
        examples = ", ".join(f"{c.id} ({c.name})" for c in clusters[:3])
        self._add(Finding(
            "Clusters are {id, name}",
            f"{len(clusters)} of {len(items)} parse; e.g. {examples or 'none'}",
            OK if clusters and len(clusters) == len(items) else DIFFERS,
            "chooses regions among the clusters that parse"
            if clusters
            else "cannot choose a region: no cluster parses",
            blocking=not clusters,
        ))
        return clusters

    # -- products ---------------------------------------------------------------------

    async def _products(self, clusters: Sequence[Cluster]) -> None:
        answer = await self._get("/products")
        items = answer.data.get("data") if isinstance(answer.data, Mapping) else None
        if not answer.ok or not isinstance(items, list):
            self._add(Finding(
                "GET /products → {data: [...]}",
                f"{answer.status}: {self._text(answer)}",
                DIFFERS,
                "cannot provision: no catalogue",
                blocking=True,
            ))
            return
        products = _parse_each(Product, items)
        skipped = len(items) - len(products)
        self._add(Finding(
            "Every product parses (one that does not is skipped, not the catalogue)",
            f"{len(products)} of {len(items)} parse",
            OK if skipped == 0 else DIFFERS,
            "uses every product"
            if skipped == 0
            else f"skips {skipped} product(s) and logs each once (novita.item_skipped)",
            blocking=bool(items) and not products,
        ))
        self._regions(items, products, clusters)
        self._prices(items)

    def _regions(
        self, items: list[Any], products: Sequence[Product], clusters: Sequence[Cluster]
    ) -> None:
        forms = sorted({_region_form(r, clusters) for item in items for r in _regions_of(item)})
        with_regions = [p for p in products if p.regions]
        placed = [p for p in with_regions if any(p.offered_in(c) for c in clusters)]
        documented = forms in ([], ["display names"])
        seen = f"{', '.join(forms) or 'no regions listed'}; {len(placed)} of "
        seen += f"{len(with_regions)} products with regions name a known cluster"
        unplaced = len(with_regions) - len(placed)
        handling = "matches display names, codes, cluster ids and objects against clusters"
        if unplaced:
            handling += f"; the {unplaced} product(s) naming no known cluster are never chosen"
        self._add(Finding(
            "Product regions are display names, e.g. \"US-CA-06 (California)\"",
            seen,
            OK if documented and not unplaced else DIFFERS,
            handling,
            blocking=bool(with_regions) and not placed,
        ))

    def _prices(self, items: list[Any]) -> None:
        price_types = sorted({_kind(i.get("price")) for i in items if isinstance(i, Mapping)})
        spot = sorted({_spot_form(i) for i in items if isinstance(i, Mapping)})
        self._add(Finding(
            "Prices are integers (or strings) in 1/100,000 USD; spotPrice a string, "
            "absent or \"0\" without spot",
            f"price: {', '.join(price_types) or 'none'}; spotPrice: {', '.join(spot) or 'none'}",
            OK,
            "reads strings and numbers; absent, empty or zero spotPrice = no spot price",
        ))

    # -- templates --------------------------------------------------------------------

    async def _templates(self) -> None:
        answer = await self._get("/templates", pageSize="1")
        items = answer.data.get("template") if isinstance(answer.data, Mapping) else None
        if not answer.ok or not isinstance(items, list):
            self._add(Finding(
                "GET /templates → {template: [...], total}",
                f"{answer.status}: {self._text(answer)}",
                DIFFERS,
                "templates are read one at a time (GET /template); the list is not used",
            ))
            return
        keys = sorted({k for t in items if isinstance(t, Mapping) for k in ("Id", "id") if k in t})
        self._add(Finding(
            "Templates carry a capital `Id`",
            f"keys: {', '.join(keys) or 'no template listed'}",
            OK if keys in ([], ["Id"]) else DIFFERS,
            "reads `Id` or `id`",
        ))

    async def _missing_template(self) -> None:
        answer = await self._get("/template", templateId=MISSING_TEMPLATE_ID)
        error = None if answer.ok else self._translate(answer, "GET /template")
        empty = answer.ok and not (
            isinstance(answer.data, Mapping) and answer.data.get("template")
        )
        recognised = empty or isinstance(error, NovitaNotFoundError)
        self._add(Finding(
            "A missing template is not found (400 TEMPLATE_NOT_FOUND)",
            self._form(answer),
            OK if recognised and answer.status == 400 else DIFFERS,
            "fails the instance with reason template_not_found"
            if recognised
            else "cannot tell a missing template: such instances wait and retry",
        ))

    # -- listing ----------------------------------------------------------------------

    async def _pages(self) -> None:
        zero = await self._get("/gpu/instances", pageSize="1", pageNum="0")
        one = await self._get("/gpu/instances", pageSize="1", pageNum="1")
        if not one.ok:
            self._add(Finding(
                "GET /gpu/instances → {instances, total}",
                f"{one.status}: {self._text(one)}",
                DIFFERS,
                "cannot list instances: lookups after a lost create answer fail",
                blocking=True,
            ))
            return
        ids_one = _ids(one)
        if not zero.ok:
            seen, base = f"pageNum 0 refused ({zero.status})", "1"
        elif not _ids(zero) and not ids_one:
            seen, base = "no instances on this account: nothing to compare", None
        elif _ids(zero) == ids_one:
            seen, base = "pages 0 and 1 hold the same instance", "1"
        else:
            seen, base = "pages 0 and 1 differ", "0"
        self._add(Finding(
            "List pages count from 0 (pageNum 0 is the first page)",
            seen,
            UNKNOWN if base is None else (OK if base == "0" else DIFFERS),
            "finds the base out at run time (pages 0 and 1 compared once), dedupes by id"
            if base is None
            else f"counts pages from {base}; dedupes by id and stops at total",
        ))
        total = one.data.get("total") if isinstance(one.data, Mapping) else None
        self._add(Finding(
            "Lists give `total`, the number of matches",
            f"total: {total!r}",
            OK if _is_count(total) else DIFFERS,
            "stops once it has `total` distinct instances"
            if _is_count(total)
            else "stops on a short page or one with nothing new",
        ))
        sample = next(iter(_instances(one) or _instances(zero)), None)
        await self._name_filter(sample)

    async def _name_filter(self, sample: Mapping[str, Any] | None) -> None:
        name = str(sample.get("name") or "") if sample else ""
        if len(name) < 3:
            self._add(Finding(
                "The list's `name` filter matches substrings",
                "no named instance to try it with",
                UNKNOWN,
                "looks up by name, and pages through every instance when that finds nothing",
            ))
            return
        part = name[1:]  # a strict part, with the end that tells names apart
        answer = await self._get("/gpu/instances", pageSize="10", name=part)
        names = [str(i.get("name") or "") for i in _instances(answer)]
        if not answer.ok:
            behaviour = f"refused ({answer.status})"
        elif any(part.lower() not in n.lower() for n in names):
            behaviour = "ignored (other names listed)"
        elif name in names:
            behaviour = "substring match"
        else:
            behaviour = "no match for a part of a name (exact match?)"
        substring = behaviour == "substring match"
        self._add(Finding(
            "The list's `name` filter matches substrings",
            behaviour,
            OK if substring else DIFFERS,
            "finds an instance by the id in its name with one filtered listing"
            if substring
            else "pages through every instance to find one by name (more list calls)",
        ))

    # -- not found and error bodies ---------------------------------------------------

    async def _missing_instance(self) -> None:
        answer = await self._get("/gpu/instance", instanceId=MISSING_INSTANCE_ID)
        error = None if answer.ok else self._translate(answer, "GET /gpu/instance")
        recognised = isinstance(error, NovitaNotFoundError)
        documented = answer.status == 400 and isinstance(answer.data, Mapping)
        self._add(Finding(
            "A missing instance is 400 RESOURCE_NOT_FOUND",
            self._form(answer),
            OK if recognised and documented else DIFFERS,
            "reads it as gone: a deleted instance is confirmed deleted"
            if recognised
            else "cannot tell a deleted instance from an error: deletes are never confirmed",
            blocking=not recognised,
        ))
        # An invalid query makes a JSON error body on most gateways; else use this one.
        invalid = await self._get("/products", gpuNum="99")
        if not invalid.ok and isinstance(invalid.data, Mapping):
            answer = invalid
        if answer.ok:
            return
        body = answer.data if isinstance(answer.data, Mapping) else None
        if body is None:
            seen, verdict = "not JSON", DIFFERS
        elif body.get("reason"):
            seen, verdict = "{code, reason, message, metadata}", OK
        else:
            seen, verdict = f"no reason; keys: {', '.join(sorted(map(str, body)))}", DIFFERS
        self._add(Finding(
            "Error bodies carry `reason` (e.g. INSUFFICIENT_RESOURCE)",
            seen,
            verdict,
            "reads the token from `reason`, else from `message`",
        ))

    def _reason(self, answer: Answer) -> str | None:
        body = answer.data if isinstance(answer.data, Mapping) else {}
        return reason_of(body.get("reason"), str(body.get("message") or ""))

    def _form(self, answer: Answer) -> str:
        if answer.ok:
            return f"{answer.status} with an empty answer"
        kind = "JSON" if isinstance(answer.data, Mapping) else "plain text"
        reason = self._reason(answer)
        return f"{answer.status} {kind}" + (f" {reason}" if reason else "")

    def _translate(self, answer: Answer, endpoint: str) -> Exception:
        # The base URL has answered 2xx by now (clusters), as it has for a running client.
        return translate(
            HttpFailure(answer.status, {}, answer.body),
            endpoint=endpoint,
            secrets=(self._key,),
            route_confirmed=True,
        )


# -- pure helpers -------------------------------------------------------------------------


def _parse_each(model: type[Any], items: list[Any]) -> list[Any]:
    parsed = []
    for item in items:
        try:
            parsed.append(model.model_validate(item))
        except ValidationError:
            continue
    return parsed


def _regions_of(item: Any) -> list[Any]:
    regions = item.get("regions") if isinstance(item, Mapping) else None
    return list(regions) if isinstance(regions, list) else []


def _region_form(region: Any, clusters: Sequence[Cluster]) -> str:
    if isinstance(region, Mapping):
        return "objects"
    text = str(region).strip()
    if " (" in text:
        return "display names"
    for fold in (str, str.upper):  # exact first: "US-CA-06" is a code, "us-ca-06" an id
        if any(fold(text) == fold(c.name) for c in clusters):
            return "codes"
        if any(fold(text) == fold(c.id) for c in clusters):
            return "cluster ids"
    return "unknown names"


def _kind(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def _spot_form(item: Mapping[str, Any]) -> str:
    if "spotPrice" not in item:
        return "absent"
    value = item["spotPrice"]
    if value in ("", "0", 0, None):
        return f"{value!r} (none)"
    return _kind(value)


def _instances(answer: Answer) -> list[Mapping[str, Any]]:
    items = answer.data.get("instances") if isinstance(answer.data, Mapping) else None
    return [i for i in items or [] if isinstance(i, Mapping)] if isinstance(items, list) else []


def _ids(answer: Answer) -> list[str]:
    return [str(i.get("id") or i.get("Id")) for i in _instances(answer)]


def _is_count(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return int(str(value)) >= 0
    except ValueError:
        return False


def render_table(findings: Sequence[Finding], base_url: str) -> str:
    """The findings as an aligned text table, then a one-line verdict."""
    header = ("Assumption", "Seen", "", "What the service will do")
    rows = [(f.assumption, f.seen, f.verdict, f.handling) for f in findings]
    widths = [min(48, max(len(r[i]) for r in [header, *rows])) for i in range(4)]
    lines = [f"Novita API at {safe_url(base_url)}", ""]
    for row in [header, *rows]:
        cells = [_wrap(text, widths[i]) for i, text in enumerate(row)]
        for n in range(max(len(c) for c in cells)):
            lines.append(
                "  ".join(
                    (c[n] if n < len(c) else "").ljust(widths[i]) for i, c in enumerate(cells)
                ).rstrip()
            )
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    blocking = [f for f in findings if f.blocking]
    differs = [f for f in findings if f.verdict == DIFFERS and not f.blocking]
    lines.append("")
    if blocking:
        lines.append(
            f"{len(blocking)} difference(s) the service cannot handle: do not run it against "
            "this account until they are fixed."
        )
    elif differs:
        lines.append(
            f"{len(differs)} difference(s) from the documented API, all handled by the client."
        )
    else:
        lines.append("Everything checked answers as documented.")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line or not lines:
        lines.append(line)
    return lines
