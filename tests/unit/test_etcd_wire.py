"""etcd's JSON gateway, both ways: base64 bytes, int64 strings, absent zero fields, error answers."""

from __future__ import annotations

import pytest

from gaffer.common.errors import (
    CompareFailed, ConfigError, LeadershipLost, NoQuorum, StorageError, StoreRejected, StoreUnavailable,
    from_wire,
)
from gaffer.controller.etcd import wire
from gaffer.controller.etcd.refusals import Unserved, parse_endpoints, refusal
from gaffer.controller.http.problems import status_of


class TestWire:
    def test_keys_and_values_are_base64_and_numbers_are_decimal_strings(self):
        """A put in a txn and a compare carry base64 bytes and int64 as strings."""
        assert wire.put_op(b"/k", b"\xff", 12) == {"request_put": {"key": "L2s=", "value": "/w==", "lease": "12"}}
        assert wire.created_at("/k", 0).plain() == {
            "key": "L2s=", "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
        assert wire.Guard(b"/k", 42).compare().plain()["create_revision"] == "42"

    def test_absent_fields_are_zero_false_and_empty(self):
        """The gateway leaves zero fields out: no succeeded is false, no create_revision is 0."""
        result = wire.txn_answer({"header": {"revision": "9"}, "responses": [{"response_range": {}}]})
        assert result.succeeded is False and result.revision == 9
        assert result.responses[0] == wire.Range((), 0, 0, False)
        kv = wire.key_value({"key": "YQ==", "mod_revision": "5"})
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision) == (b"a", b"", 0, 5)

    @pytest.mark.parametrize("raw", [{"mod_revision": "x"}, {"mod_revision": 1.5}, {"mod_revision": "9" * 30},
                                     {"key": "not base64!"}, {"key": 5}])
    def test_a_malformed_answer_is_one_clear_store_rejected(self, raw):
        """Bad numbers or base64 in an answer raise StoreRejected naming the field."""
        with pytest.raises(StoreRejected, match="malformed") as caught:
            wire.key_value(raw)
        assert caught.value.reason == "malformed"

    def test_a_prefix_covers_every_key_starting_with_it(self):
        """range_end is the prefix with its last byte below 0xff incremented; '' means all keys."""
        assert wire.prefix_end(b"/a") == b"/b"
        assert wire.prefix_end(b"a\xff") == b"b"
        assert wire.key_range("", prefix=True) == {"key": "AA==", "range_end": "AA=="}

    def test_watch_messages_carry_puts_deletes_and_cancellation(self):
        """A watch message's events, and a cancel for compaction, are read."""
        batch = wire.watch_message({"result": {"header": {"revision": "6"}, "events": [
            {"kv": {"key": "YQ==", "create_revision": "5", "mod_revision": "5", "value": "Yg=="}},
            {"type": "DELETE", "kv": {"key": "YQ==", "mod_revision": "6"}}]}})
        assert [(e.kind, e.kv.create_revision, e.kv.mod_revision) for e in batch.events] == [
            ("PUT", 5, 5), ("DELETE", 0, 6)]
        cancel = wire.watch_message({"result": {"canceled": True, "compact_revision": "3"}})
        assert cancel.canceled and cancel.compact_revision == 3


class TestRefusals:
    def test_no_leader_is_tried_elsewhere_and_flagged(self):
        """UNAVAILABLE 'no leader' is not a refusal: the next member is tried, and it counts
        towards NoQuorum."""
        verdict = refusal("http://a:1", 503, {"code": 14, "message": "etcdserver: no leader"})
        assert verdict == Unserved("http://a:1", "etcdserver: no leader", True)

    def test_a_missing_lease_is_refused_with_a_stable_reason(self):
        """NOT_FOUND 'requested lease not found' is StoreRejected lease_not_found, naming the endpoint."""
        verdict = refusal("http://a:1", 404, {"code": 5, "message": "etcdserver: requested lease not found"})
        assert isinstance(verdict, StoreRejected)
        assert (verdict.reason, verdict.status) == ("lease_not_found", 5)
        assert "http://a:1" in verdict.message

    def test_endpoints_are_checked_and_normalised(self):
        """host:port lists become http:// URLs without duplicates; bad ones are named."""
        assert parse_endpoints("h1:2379, http://h2:2379,h1:2379") == ("http://h1:2379", "http://h2:2379")
        for bad, word in (("h1", "host:port"), ("https://h:1", "only http"), ("h:1/x", "no path"),
                          ("", "no etcd endpoint"), ("h:99999", "h:99999")):
            with pytest.raises(ConfigError, match=word):
                parse_endpoints(bad)


class TestErrors:
    @pytest.mark.parametrize("error", [
        StoreUnavailable("no etcd endpoint served kv/put", "http://a:1"),
        NoQuorum("etcd has no quorum", "http://b:2"),
        StoreRejected("refused", 5, "lease_not_found"),
        CompareFailed("compare did not hold"),
        LeadershipLost("lost", 42),
    ])
    def test_store_errors_are_storage_errors_and_survive_the_wire(self, error):
        """Each etcd error is a StorageError with a stable code, rebuilt equal from the wire."""
        assert isinstance(error, StorageError)
        back = from_wire(error.to_dict())
        assert type(back) is type(error) and back.to_dict() == error.to_dict()

    def test_store_errors_answer_http_503_and_a_failed_compare_409(self):
        """Over HTTP the etcd errors are 'try again later' (503), a failed compare a conflict."""
        for code in ("store_unavailable", "no_quorum", "store_rejected", "leadership_lost"):
            assert status_of(code) == 503, code
        assert status_of("compare_failed") == 409
