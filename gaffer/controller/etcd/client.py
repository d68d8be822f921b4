"""EtcdClient: etcd's v3 API through its JSON gateway, over several endpoints.

Every call is one POST to ``/v3/...`` (the gateway's prefix from etcd 3.4 on; Debian's
``etcd-server`` is 3.4) on the endpoint that answered last. A call is bounded by ``timeout`` as
a whole, and each endpoint by its share of it (``attempt_timeout``), so a frozen member (it
accepts connections but never answers) costs one share and the next member is tried::

    call ──► endpoint k ──answer──► wire.* value
                │ refused / reset / silent past its share / "no leader" (14)
                ▼
             endpoint k+1 ... each at most once per call
                │ none served
                ▼
             NoQuorum (one said it has no leader) or StoreUnavailable, naming every endpoint
             and its reason

Every request carries gRPC's ``hasleader`` metadata (``Grpc-Metadata-hasleader: true``), so a
member cut off from its quorum answers "no leader" at once instead of holding the request until
etcd's own 7 s timeout. A write that timed out may have been applied anyway; trying it on the
next member is safe for what gaffer writes (whole values, guarded by compares).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Iterable, Sequence

import aiohttp

from gaffer.common.errors import LeadershipLost, NoQuorum, StoreRejected, StoreUnavailable
from gaffer.controller.etcd import wire
from gaffer.controller.etcd.refusals import Unserved, parse_endpoints, refusal

DEFAULT_TIMEOUT = 2.0
MAX_ANSWER = 64 * 1024 * 1024
"""The largest answer read (etcd's own request limit is 1.5 MiB; a range of many keys is more)."""
MAX_WATCH_MESSAGE = 8 * 1024 * 1024
HEADERS = {"Grpc-Metadata-hasleader": "true"}
CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)


class EtcdClient:
    """One aiohttp session to a set of etcd members (``endpoints``: ``host:port`` strings or
    ``http://`` URLs, or one comma-separated string). Close it with ``close()`` (or use it as
    an async context manager)."""

    def __init__(self, endpoints: str | Sequence[str], *, timeout: float = DEFAULT_TIMEOUT,
                 attempt_timeout: float | None = None) -> None:
        self.endpoints = parse_endpoints(endpoints if isinstance(endpoints, str) else tuple(endpoints))
        if not 0 < timeout <= 600:
            raise ValueError(f"timeout must be in (0, 600] seconds, not {timeout}")
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout or max(timeout / len(self.endpoints), min(timeout, 0.25))
        self._preferred = 0
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
        return self._session

    # ------------------------------------------------------------------ the calls

    async def call(self, path: str, body: dict, timeout: float | None = None) -> dict:
        """POST ``body`` to ``/v3/<path>`` on the first endpoint that serves it (see module)."""
        loop = asyncio.get_running_loop()
        total = timeout or self.timeout
        deadline = loop.time() + total
        unserved: list[Unserved] = []
        count = len(self.endpoints)
        attempt = self.attempt_timeout if timeout is None else max(total / count, min(total, 0.1))
        for step in range(count):
            index = (self._preferred + step) % count
            endpoint = self.endpoints[index]
            left = deadline - loop.time()
            if left <= 0:
                break
            share = min(attempt, left) if step < count - 1 else left
            outcome = await self._attempt(endpoint, path, body, share)
            if isinstance(outcome, Unserved):
                unserved.append(outcome)
                continue
            self._preferred = index
            return outcome
        self._preferred = (self._preferred + 1) % count
        raise _none_served(path, unserved, total)

    async def _attempt(self, endpoint: str, path: str, body: dict, share: float) -> dict | Unserved:
        try:
            async with asyncio.timeout(share):
                async with self._http().post(f"{endpoint}/v3/{path}", json=body, headers=HEADERS) as answer:
                    data = await _read_json(answer)
                    status = answer.status
        except TimeoutError:
            return Unserved(endpoint, f"no answer within {share:.2f}s")
        except CONNECTION_ERRORS as exc:
            return Unserved(endpoint, _describe(exc))
        except ValueError as exc:
            return Unserved(endpoint, f"not a JSON answer ({exc})")
        if status == 200 and isinstance(data, dict) and "error" not in data:
            return data
        verdict = refusal(endpoint, status, data)
        if isinstance(verdict, StoreRejected):
            raise verdict
        return verdict

    async def range(self, key: bytes | str, *, prefix: bool = False, limit: int = 0,
                    revision: int = 0, timeout: float | None = None) -> wire.Range:
        """The keys equal to ``key`` (or starting with it), read linearizably."""
        body = wire.key_range(key, prefix)
        if limit:
            body["limit"] = str(limit)
        if revision:
            body["revision"] = str(revision)
        return wire.range_answer(await self.call("kv/range", body, timeout))

    async def get(self, key: bytes | str, timeout: float | None = None) -> wire.KeyValue | None:
        found = await self.range(key, timeout=timeout)
        return found.kvs[0] if found.kvs else None

    async def put(self, key: bytes | str, value: bytes | str, *, lease: int = 0,
                  timeout: float | None = None) -> int:
        """Store ``value`` at ``key`` (bound to ``lease`` if given); the new revision."""
        body: dict[str, Any] = {"key": wire.b64(key), "value": wire.b64(value)}
        if lease:
            body["lease"] = str(lease)
        return wire.header_revision(await self.call("kv/put", body, timeout))

    async def delete(self, key: bytes | str, *, prefix: bool = False, timeout: float | None = None) -> int:
        """Delete ``key`` (or every key under it); how many were deleted."""
        body = wire.delete_op(key, prefix)["request_delete_range"]
        return wire.number(await self.call("kv/deleterange", body, timeout), "deleted")

    async def txn(self, compares: Iterable[wire.Compare], success: Iterable[dict],
                  failure: Iterable[dict] = (), timeout: float | None = None) -> wire.TxnResult:
        """If every compare holds, do ``success``, else ``failure``, in one revision."""
        request = wire.txn_request(compares, success, failure)
        return wire.txn_answer(await self.call("kv/txn", request, timeout))

    async def guarded(self, guard: wire.Guard, ops: Iterable[dict], timeout: float | None = None) -> wire.TxnResult:
        """Do ``ops`` only while ``guard`` holds (the election key still has its term); else
        LeadershipLost and nothing is written."""
        result = await self.txn([guard.compare()], ops, (), timeout)
        if not result.succeeded:
            raise LeadershipLost(
                f"write refused: the election key {guard.key.decode(errors='replace')!r} no longer "
                f"has term {guard.term} (another controller leads, or none does)", guard.term)
        return result

    async def grant(self, ttl: int, timeout: float | None = None) -> tuple[int, int]:
        """A new lease: (its id, the TTL etcd granted, which may be more than asked)."""
        answer = await self.call("lease/grant", {"TTL": str(ttl)}, timeout)
        return wire.number(answer, "ID"), wire.number(answer, "TTL")

    async def keepalive(self, lease: int, timeout: float | None = None) -> int:
        """Renew ``lease`` once; the TTL it has again, 0 when it no longer exists."""
        answer = await self.call("lease/keepalive", {"ID": str(lease)}, timeout)
        result = answer.get("result")
        if not isinstance(result, dict):
            raise wire.malformed("a keepalive answer has no result")
        return wire.number(result, "TTL")

    async def revoke(self, lease: int, timeout: float | None = None) -> bool:
        """End ``lease`` and delete its keys; False when it had already ended."""
        try:
            await self.call("lease/revoke", {"ID": str(lease)}, timeout)
        except StoreRejected as exc:
            if exc.reason == "lease_not_found":
                return False
            raise
        return True

    async def status(self, endpoint: str, timeout: float | None = None) -> wire.Status:
        """One member's own view, asked without ``hasleader`` so that a member without a
        quorum answers too (``leader`` 0: it has none)."""
        share = timeout or self.attempt_timeout
        try:
            async with asyncio.timeout(share):
                async with self._http().post(f"{endpoint}/v3/maintenance/status", json={}) as answer:
                    data = await _read_json(answer)
        except TimeoutError:
            raise StoreUnavailable(f"etcd at {endpoint}: no status within {share:.2f}s", endpoint) from None
        except (*CONNECTION_ERRORS, ValueError) as exc:
            raise StoreUnavailable(f"etcd at {endpoint}: {_describe(exc)}", endpoint) from None
        if not isinstance(data, dict) or "error" in data:
            raise StoreUnavailable(f"etcd at {endpoint}: status refused: {str(data)[:200]}", endpoint)
        return wire.status_answer(endpoint, data)

    async def watch(self, key: bytes | str, *, start_revision: int = 0,
                    prefix: bool = False) -> AsyncIterator[wire.WatchBatch]:
        """The changes of ``key`` (or its prefix) from ``start_revision`` (0: from now), one
        batch at a time, for as long as the caller reads. Raises StoreUnavailable when the
        stream ends or breaks (start again from the last revision seen + 1), StoreRejected
        (``compacted``) when etcd no longer has the history asked for. Close it (aclosing)."""
        request = wire.key_range(key, prefix)
        if start_revision:
            request["start_revision"] = str(start_revision)
        answer = await self._open_watch({"create_request": request})
        endpoint = str(answer.url.origin())
        try:
            async for message in _messages(answer, endpoint):
                batch = wire.watch_message(message)
                if batch.canceled:
                    raise StoreRejected(
                        f"etcd at {endpoint} cancelled the watch: "
                        f"{batch.cancel_reason or 'compacted at revision ' + str(batch.compact_revision)}",
                        0, "compacted" if batch.compact_revision else "error")
                yield batch
        finally:
            answer.close()
        raise StoreUnavailable(f"etcd at {endpoint} ended the watch stream", endpoint)

    async def _open_watch(self, body: dict) -> aiohttp.ClientResponse:
        unserved: list[Unserved] = []
        for step in range(len(self.endpoints)):
            endpoint = self.endpoints[(self._preferred + step) % len(self.endpoints)]
            try:
                async with asyncio.timeout(self.attempt_timeout):
                    answer = await self._http().post(f"{endpoint}/v3/watch", json=body, headers=HEADERS)
            except TimeoutError:
                unserved.append(Unserved(endpoint, f"no answer within {self.attempt_timeout:.2f}s"))
                continue
            except CONNECTION_ERRORS as exc:
                unserved.append(Unserved(endpoint, _describe(exc)))
                continue
            if answer.status == 200:
                return answer
            answer.close()
            unserved.append(Unserved(endpoint, f"HTTP {answer.status}"))
        raise _none_served("watch", unserved, self.timeout)


async def _read_json(answer: aiohttp.ClientResponse) -> Any:
    if answer.content_length is not None and answer.content_length > MAX_ANSWER:
        raise ValueError(f"answer of {answer.content_length} bytes is over {MAX_ANSWER}")
    raw = await answer.content.read(MAX_ANSWER + 1)
    if len(raw) > MAX_ANSWER:
        raise ValueError(f"answer is over {MAX_ANSWER} bytes")
    return json.loads(raw) if raw else None


async def _messages(answer: aiohttp.ClientResponse, endpoint: str) -> AsyncIterator[Any]:
    """The JSON objects of a streamed answer, one a line, each at most MAX_WATCH_MESSAGE."""
    buffer = b""
    try:
        while chunk := await answer.content.readany():
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            if len(buffer) > MAX_WATCH_MESSAGE:
                raise StoreRejected(f"etcd at {endpoint}: a watch message over {MAX_WATCH_MESSAGE} bytes",
                                    0, "too_large")
            for line in filter(None, (raw.strip() for raw in lines)):
                try:
                    yield json.loads(line)
                except ValueError:
                    raise wire.malformed("a watch message is not JSON") from None
    except CONNECTION_ERRORS as exc:
        raise StoreUnavailable(f"etcd at {endpoint}: watch stream broke: {_describe(exc)}", endpoint) from None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def _none_served(path: str, unserved: list[Unserved], total: float) -> StoreUnavailable:
    detail = "; ".join(f"{u.endpoint}: {u.reason}" for u in unserved) or f"no time left of {total:.2f}s"
    last = unserved[-1].endpoint if unserved else None
    if any(u.no_leader for u in unserved):
        return NoQuorum(f"etcd has no quorum ({path}): {detail}", last)
    return StoreUnavailable(f"no etcd endpoint served {path} within {total:.2f}s: {detail}", last)
