"""State bigger than one wire message: listings in pages, applies in staged parts committed as
one, assignments in parts, and templates too big to ever send refused at apply."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from gaffer.common import protocol
from gaffer.common.errors import InvalidRequest, TemplateError, TooLarge
from gaffer.controller import sending as sending_module
from gaffer.controller.paging import MAX_LIMIT
from inproc import spec


def many(count: int, prefix: str = "t", **fields) -> list[dict]:
    return [spec(f"{prefix}{i}", 0, **fields) for i in range(count)]


async def test_listings_page_through_everything_in_order(cluster):
    """limit + continue give every item once, in order, for templates, ps and nodes."""
    await cluster.start_controller()
    await cluster.start_agent("n1")
    await cluster.call("apply", templates=[spec("web", 7), *many(25)])
    await cluster.wait_running(7, "web")
    for op, key in (("templates", "name"), ("ps", "id"), ("nodes", "name")):
        whole = await cluster.call(op)
        paged = await cluster.client.listing(op, page=3)
        assert [row[key] for row in paged] == [row[key] for row in whole]
        first = await cluster.call(op, limit=3)
        assert len(first["items"]) == min(3, len(whole))
    last = await cluster.call("templates", limit=MAX_LIMIT)
    assert last["continue"] is None


async def test_bad_paging_arguments_are_clear_errors(cluster):
    """A limit out of range or a forged token is refused, naming the argument."""
    await cluster.start_controller()
    for args, word in (({"limit": 0}, "limit"), ({"limit": MAX_LIMIT + 1}, "limit"),
                       ({"limit": 2, "continue": "nope!"}, "continue"), ({"continue": "x"}, "continue")):
        with pytest.raises(InvalidRequest, match=word):
            await cluster.call("templates", **args)


async def test_an_answer_too_large_is_an_error_not_silence(cluster, monkeypatch):
    """A listing that cannot fit one message answers too_large at once; paging still works."""
    await cluster.start_controller()
    await cluster.call("apply", templates=many(300))
    monkeypatch.setattr(protocol, "MAX_MESSAGE", 64 * 1024)
    with pytest.raises(TooLarge, match="pages"):
        await cluster.call("templates")
    assert len(await cluster.client.listing("templates", page=50)) == 300


async def test_a_large_apply_goes_in_parts_and_commits_as_one(cluster, monkeypatch):
    """An apply bigger than a part is staged and committed whole; the answer summarizes it."""
    await cluster.start_controller()
    monkeypatch.setattr("gaffer.client.wire.APPLY_PART_BYTES", 16 * 1024)
    monkeypatch.setattr("gaffer.controller.api.MAX_APPLY_RESULTS", 100)
    result = await cluster.client.apply(many(600))
    assert result["counts"] == {"created": 600} and len(result["results"]) == 100 and result["more"] == 500
    assert len(await cluster.client.listing("templates")) == 600


async def test_a_bad_part_refuses_the_whole_apply(cluster, monkeypatch):
    """One invalid template in any part: nothing of that apply is stored."""
    await cluster.start_controller()
    monkeypatch.setattr("gaffer.client.wire.APPLY_PART_BYTES", 16 * 1024)
    templates = many(300)
    templates[250]["numprocesses"] = -1
    with pytest.raises(TemplateError, match="t250.numprocesses"):
        await cluster.client.apply(templates)
    assert await cluster.call("templates") == []


async def test_a_stage_nobody_commits_is_refused_later(cluster):
    """Committing a stage that was never opened (or expired) is a clear error, nothing stored."""
    await cluster.start_controller()
    stage = secrets.token_urlsafe(24)
    await cluster.call("stage_apply", stage=stage, templates=many(3))
    cluster.controller.stages.expire(cluster.controller.now() + 10_000)
    with pytest.raises(InvalidRequest, match="no staged apply"):
        await cluster.call("apply", stage=stage, templates=many(1, prefix="u"))
    assert await cluster.call("templates") == []


async def test_huge_templates_are_refused_and_others_keep_running(cluster):
    """Two templates with a 2.5 MB argument each (they once wedged a node) are refused at
    apply, by name, and the rest of the cluster runs as before."""
    await cluster.start_controller()
    await cluster.start_agent("n1")
    await cluster.call("apply", templates=[spec("web", 2)])
    await cluster.wait_running(2, "web")
    big = [spec(f"big{i}", 1, args=["x" * 2_500_000]) for i in range(2)]
    with pytest.raises(TemplateError) as refused:
        await cluster.client.apply(big)
    assert "big0: the template is" in refused.value.message and "big1:" in refused.value.message
    with pytest.raises(TemplateError, match="limit is 262,144"):
        await cluster.call("apply", templates=[spec("big", 1, args=["x" * 300_000])])
    assert sorted(t["name"] for t in await cluster.call("templates")) == ["web"]
    await cluster.call("scale", name="web", count=3)
    await cluster.wait_running(3, "web")


async def test_an_assignment_too_big_for_one_message_arrives_in_parts(cluster, monkeypatch):
    """With parts of a few KiB, every instance of a 60-template assignment still runs, and a
    later change (a scale) applies whole again."""
    monkeypatch.setattr(sending_module, "PART_BYTES", 8 * 1024)
    await cluster.start_controller()
    agent = await cluster.start_agent("n1")
    await cluster.call("apply", templates=[spec(f"s{i}", 1) for i in range(60)])
    await cluster.wait_running(60)
    sent = cluster.controller.cluster.sent["n1"]
    assert len(sent.bodies) > 1 and all("part" in body for body in sent.bodies)
    await cluster.call("scale", name="s7", count=3)
    await cluster.wait_running(62)
    await asyncio.wait_for(agent.connected.wait(), 5)
    assert agent.assignments.generation == cluster.controller.cluster.sent["n1"].generation
