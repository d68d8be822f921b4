"""The controller's reconcile as a value: scenarios in, named lists out, no clock, no sockets.

Each scenario builds a ``World`` (``reconcile_harness``), runs the pure ``reconcile`` and checks
the named lists with one ``assert_reconcile``; the properties at the end generate clusters and
check what must always hold.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaffer.common import assign
from gaffer.controller.reconcile import RESEND_AFTER, Placement, reconcile
from gaffer.controller.scheduler import FAILED_EVERYWHERE
from gaffer.testing import template
from tests.unit.reconcile_harness import (
    World,
    allowances,
    assert_reconcile,
    desired_of,
    ordinals_sent,
    web,
)
from budget import examples


def settled(*names: str, count: int = 6, **fields) -> World:
    """Nodes ``names`` running ``count`` of web, all sent, acked and reported running."""
    world = World.of(*names, templates=[web(count, **fields)])
    world.step()
    world.ack()
    world.report_running()
    return world


# ---------------------------------------------------------------- placing and sending


def test_a_new_template_is_placed_and_every_node_gets_its_assignment():
    """Six instances over three nodes: six slots stored, each node sent its two ordinals."""
    world = World.of("a", "b", "c", templates=[web(6)])
    result = world.run()
    assert_reconcile(result, changes=6, sends="abc")
    assert ordinals_sent(result) == {"a": {"web": [1, 4]}, "b": {"web": [2, 5]}, "c": {"web": [3, 6]}}
    assert all(node in "abc" for node in result.changes.values())
    body = result.sends[0].body(7)
    assert body["generation"] == 7 and body["ordinals"] == {"web": [1, 4]}
    assert assign.Control.from_wire(body["controls"]["web"]) == assign.Control(2, 1, 0)
    assert "numprocesses" not in body["templates"]["web"]


def test_reconciling_a_carried_out_result_again_does_nothing():
    """Level-triggered: once stored and sent, the same state gives an empty pass."""
    world = World.of("a", "b", templates=[web(4)])
    world.step()
    again = world.run()
    assert_reconcile(again)
    assert not again.acts


def test_a_disconnected_node_is_placed_on_but_not_sent_to():
    """A node that is up but has no session keeps its slots; nothing is sent to it."""
    world = World.of("a", templates=[web(2)])
    world.add_node("b", connected=False)
    result = world.run()
    assert_reconcile(result, changes=2, sends="a")


def test_a_node_that_says_hello_again_gets_its_assignment_anew():
    """A fresh node (back up) is sent its whole assignment even though it did not change."""
    world = settled("a", "b")
    world.fresh.add("b")
    assert_reconcile(world.run(), sends="b")


def test_a_paused_template_stays_on_its_nodes_with_no_ordinals_and_paused():
    """Pausing: every node that ran web is sent web with no ordinals and ``paused`` (so it
    stops it and says stopped, not deleted); resuming sends the ordinals again."""
    world = settled("a", "b")
    world.desired["web"] = desired_of(web(6), paused=True)
    result = world.step()
    assert_reconcile(result, changes=6, sends="ab")
    for send in result.sends:
        body = send.body(9)
        assert body["ordinals"] == {"web": []}
        assert assign.Control.from_wire(body["controls"]["web"]) == assign.Control(0, 1, 0, paused=True)
    assert_reconcile(world.run())
    world.want(web(6))
    resumed = world.step()
    assert {send.node for send in resumed.sends} == {"a", "b"}
    assert all(not assign.Control.from_wire(s.body(10)["controls"]["web"]).paused for s in resumed.sends)


def test_a_paused_template_is_not_sent_to_nodes_that_never_had_it():
    """Only nodes that were sent the template keep it while paused; then deleting drops it."""
    world = settled("a")
    world.add_node("b")
    world.desired["web"] = desired_of(web(2), paused=True)
    result = world.step()
    templates = {send.node: send.body(9)["templates"] for send in result.sends}
    assert "web" in templates["a"] and "web" not in templates.get("b", {})
    world.step()
    del world.desired["web"]
    gone = world.step()
    assert [send.node for send in gone.sends] == ["a"] and "web" not in gone.sends[0].body(11)["templates"]


def test_scaling_down_stops_the_highest_ordinals():
    """From 6 to 4: two slots change (to no node) and the nodes holding them are sent."""
    world = settled("a", "b", "c")
    world.want(web(4))
    result = world.run()
    assert result.changes == {("web", 5): None, ("web", 6): None}
    assert_reconcile(result, changes=2, sends="bc")


def test_a_deleted_template_leaves_every_node_that_ran_it():
    """No desired templates: every slot stops and every node is sent an empty assignment."""
    world = settled("a", "b")
    world.desired.clear()
    result = world.run()
    assert_reconcile(result, changes=6, sends="ab")
    assert all(not send.orders for send in result.sends)


# ---------------------------------------------------------------- lost nodes


def test_a_node_down_past_its_grace_is_lost_and_its_slots_move():
    """Down for longer than the grace: lost, its two slots placed on the others, which are
    sent their new assignments; nothing is sent to the lost node."""
    world = settled("a", "b", "c")
    world.down("b", since=world.now - world.grace)
    result = world.run()
    assert_reconcile(result, changes=2, sends="ac", lost="b")
    assert set(result.changes) == {("web", 2), ("web", 5)}
    assert "b" not in result.plan.placement.values()


def test_a_node_down_within_its_grace_keeps_its_slots():
    """Down for less than the grace: not lost, nothing moves, nothing is sent."""
    world = settled("a", "b", "c")
    world.down("b", since=world.now - world.grace + 0.1)
    assert_reconcile(world.run())


def test_nothing_is_lost_while_the_guard_forbids_moving():
    """Startup grace or most nodes silent: down for ages, still not lost."""
    world = settled("a", "b", "c")
    world.down("b", since=world.now - 1000)
    world.may_move = False
    assert_reconcile(world.run())


def test_a_cordoned_node_keeps_its_slots_and_a_draining_one_gives_them_up():
    """Cordon places nothing new there; drain moves what it runs to the others."""
    world = settled("a", "b", count=4)
    world.set_flags("b", cordoned=True)
    world.want(web(6))
    result = world.step()
    assert set(result.changes) == {("web", 5), ("web", 6)}
    assert set(result.changes.values()) == {"a"}
    world.set_flags("b", draining=True)
    result = world.run()
    assert world.on_node("b") and "b" not in result.plan.placement.values()


# ---------------------------------------------------------------- resends


def test_an_unacked_assignment_is_resent_after_resend_after_and_not_before():
    """No ack: nothing at RESEND_AFTER minus a little, a resend at RESEND_AFTER (the same
    generation: no new send), and none once acked."""
    world = World.of("a", "b", templates=[web(2)])
    world.step()
    world.ack("a")
    sent_at = world.now
    world.now = sent_at + RESEND_AFTER - 0.01
    assert_reconcile(world.run())
    world.now = sent_at + RESEND_AFTER
    result = world.step()
    assert_reconcile(result, resends="b")
    assert world.sent["b"].generation == 1
    world.ack("b")
    world.now += RESEND_AFTER
    assert_reconcile(world.run())


def test_a_resend_waits_again_after_it_went_out():
    """After a resend, the next one is RESEND_AFTER later, not on every pass."""
    world = World.of("a", templates=[web(1)])
    world.step()
    world.now += RESEND_AFTER
    assert_reconcile(world.step(), resends="a")
    world.now += RESEND_AFTER / 2
    assert_reconcile(world.run())


def test_a_disconnected_node_is_not_resent_to():
    """No session, no resend (it gets the assignment when it says hello again)."""
    world = World.of("a", templates=[web(1)])
    world.step()
    world.nodes["a"] = replace(world.nodes["a"], connected=False)
    world.now += 10 * RESEND_AFTER
    assert world.run().resends == ()


# ---------------------------------------------------------------- rolling updates


def test_a_spec_change_rolls_one_node_at_a_time_within_max_unavailable():
    """Three nodes of two instances, max_unavailable 1: one node rolls with allowance 1, the
    others keep the old version; each finished node hands the allowance on; then it ends."""
    world = settled("a", "b", "c", update={"max_unavailable": 1})
    old = world.desired["web"].version
    world.want(web(6, args=["new"], update={"max_unavailable": 1}))
    new = world.desired["web"].version
    result = world.step()
    assert_reconcile(result, sends="a", rollout_steps=[("web", "started")])
    assert allowances(result, "web", new) == {"a": 1}
    assert dict(result.rollouts["web"].rolling) == {"a": 1}
    rolled = ["a"]
    for _ in range(3):
        world.ack()
        world.report_running(rolled[-1])
        result = world.step()
        assert sum(result.rollouts["web"].rolling.values()) <= 1 if "web" in result.rollouts else True
        if "web" not in result.rollouts:
            break
        assert len(result.sends) == 1
        rolled.append(result.sends[0].node)
        assert allowances(result, "web", new) == {rolled[-1]: 1}
    assert rolled == ["a", "b", "c"]
    assert [(s.template, s.kind) for s in result.rollout_steps] == [("web", "finished")]
    assert all(world.sent[n].orders["web"].version.key == new.key for n in "abc")
    assert old.key != new.key


def test_a_larger_budget_rolls_several_nodes_at_once():
    """max_unavailable 4 over nodes of two instances: two nodes roll, sharing the budget."""
    world = settled("a", "b", "c", update={"max_unavailable": 4})
    world.want(web(6, args=["new"], update={"max_unavailable": 4}))
    result = world.run()
    assert allowances(result, "web", world.desired["web"].version) == {"a": 2, "b": 2}


def test_a_restart_is_a_rollout_of_the_same_spec():
    """A new restart generation rolls like a spec change; the spec sent is the same."""
    world = settled("a", "b")
    before = world.desired["web"].version
    world.want(web(6), restart=1)
    result = world.run()
    assert_reconcile(result, sends="a", rollout_steps=[("web", "started")])
    order = result.sends[0].orders["web"]
    assert order.version.restart == 1 and order.version.spec == before.spec


# ---------------------------------------------------------------- failures


def test_a_slot_that_failed_everywhere_is_announced_once():
    """Failed on every node: pending with the reason, announced with the nodes, and not
    announced again on the next pass."""
    world = World.of("a", "b", templates=[web(2)])
    world.failed[("web", 2)] = frozenset({"a", "b"})
    result = world.step()
    assert_reconcile(result, changes=1, sends="ab", announce=[("web", 2)])
    assert ordinals_sent(result) == {"a": {"web": [1]}, "b": {}}
    assert result.plan.pending["web"].reason == FAILED_EVERYWHERE
    assert result.announce[0].payload() == {
        "template": "web", "id": "web.2", "ordinal": 2, "scope": "cluster",
        "nodes": ["a", "b"], "reason": FAILED_EVERYWHERE,
    }
    assert_reconcile(world.run())


def test_a_slot_that_failed_on_one_node_moves_to_another():
    """A failure on its node makes the slot avoid that node: it moves, nothing announced."""
    world = settled("a", "b", count=2)
    world.failed[("web", 1)] = frozenset({"a"})
    result = world.run()
    assert result.changes == {("web", 1): "b"}
    assert_reconcile(result, changes=1, sends="ab")


# ---------------------------------------------------------------- the log line and plan reuse


def test_a_node_whose_new_instances_are_up_but_not_ready_keeps_its_turn():
    """A rolling node is done only when its instances of the new version are ready, not just
    running: until then the next node waits on the old version."""
    world = settled("a", "b", update={"max_unavailable": 1})
    world.want(web(4, args=["new"], update={"max_unavailable": 1}))
    world.step()
    world.ack()
    world.report_running("a", ready=False)
    result = world.step()
    assert dict(result.rollouts["web"].rolling) == {"a": 1} and result.sends == ()
    world.report_running("a")
    result = world.step()
    assert [s.node for s in result.sends] == ["b"]


def test_a_rollout_without_progress_for_its_deadline_is_stuck_once_and_stops():
    """No new instance ready for ``update.progress_deadline`` seconds: one ``stuck`` step, the
    waiting node keeps the old version; new instances turning ready end the stuck spell."""
    world = settled("a", "b", update={"max_unavailable": 1})
    old = world.desired["web"].version
    world.want(web(4, args=["new"], update={"max_unavailable": 1, "progress_deadline": 30}))
    world.step()
    world.ack()
    world.report_running("a", ready=False)
    world.now += 29
    assert not world.step().rollouts["web"].stuck
    world.now += 1
    result = world.step()
    assert [(s.template, s.kind, s.ready) for s in result.rollout_steps] == [("web", "stuck", 0)]
    assert result.rollouts["web"].stuck and result.rollouts["web"].order_for("b", 1).version.key == old.key
    world.now += 100
    result = world.step()
    assert result.rollout_steps == () and result.rollouts["web"].stuck and result.sends == ()
    world.report_running("a")
    result = world.step()
    assert [s.node for s in result.sends] == ["b"] and not result.rollouts["web"].stuck


def test_log_fields_say_what_the_pass_did():
    """One flat line: the plan's counts, the lists' sizes, lost nodes, rollouts."""
    world = settled("a", "b", "c")
    world.down("c", since=world.now - world.grace)
    world.failed[("web", 1)] = frozenset({"a", "b", "c"})
    assert world.run().log_fields() == {
        "scheduled": True, "placed": 5, "kept": 3, "added": 0, "moved": 2, "stopped": 0,
        "evicted": 1, "stayed": 0, "pending": 1, "changes": 3, "lost": ["c"], "sent": 1, "resent": 0,
        "rolling": {}, "rollouts_started": [], "rollouts_finished": [], "rollouts_stuck": [],
        "failed_everywhere": 1,
    }


def test_keeping_the_plan_places_nothing_and_logs_no_counts():
    """With ``replace`` False (only reports changed), the last plan is kept as it is."""
    world = World.of("a", templates=[web(2)])
    first = world.step()
    desired, nodes, _, rollouts, failures, now = world.inputs()
    kept = Placement(world.placement, plan=first.plan, by_node=first.by_node, keys=first.keys, replace=False)
    world.desired["web"] = desired_of(web(5))
    result = reconcile(world.desired, nodes, kept, rollouts, failures, now)
    assert_reconcile(result, scheduled=False)
    assert result.plan is first.plan
    assert set(result.log_fields()) == {
        "scheduled", "changes", "lost", "sent", "resent", "rolling", "rollouts_started",
        "rollouts_finished", "rollouts_stuck", "failed_everywhere",
    }


# ---------------------------------------------------------------- properties

NODE_NAMES = "abcdef"
node_strategy = st.fixed_dictionaries({
    "state": st.sampled_from(["up", "up", "suspect", "down"]),
    "down_for": st.floats(0, 10),
    "connected": st.booleans(),
    "cordoned": st.booleans(),
    "draining": st.booleans(),
})
template_strategy = st.tuples(
    st.sampled_from(["api", "web", "worker"]),
    st.integers(0, 8),
    st.one_of(st.none(), st.integers(1, 3)),
)


@st.composite
def worlds(draw: st.DrawFn) -> World:
    world = World(may_move=draw(st.booleans()), grace=2.0)
    specs = draw(st.dictionaries(st.sampled_from(NODE_NAMES), node_strategy, min_size=1))
    for name, spec in sorted(specs.items()):
        world.add_node(name, cordoned=spec["cordoned"], draining=spec["draining"],
                       connected=spec["connected"] and spec["state"] != "down")
        if spec["state"] == "down":
            world.down(name, since=world.now - spec["down_for"])
        elif spec["state"] == "suspect":
            world.set_flags(name, state="suspect")
    for name, count, max_per_node in draw(st.lists(template_strategy, max_size=3, unique_by=lambda t: t[0])):
        placement = {"max_per_node": max_per_node} if max_per_node else {}
        world.want(template(name, numprocesses=count, placement=placement))
    names = sorted(specs) + ["gone"]
    for name, want in world.desired.items():
        for ordinal in range(1, want.demand.count + 3):
            where = draw(st.one_of(st.none(), st.sampled_from(names)))
            if where is not None:
                world.placement[(name, ordinal)] = where
            failed = draw(st.sets(st.sampled_from(sorted(specs)), max_size=2))
            if failed:
                world.failed[(name, ordinal)] = frozenset(failed)
    return world


PROPERTY = settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(worlds())
def test_every_wanted_slot_is_placed_or_pending_and_nothing_more(world: World):
    """Each ordinal 1..count of each template is placed or pending, exactly once; nothing
    beyond the counts is placed."""
    result = world.run()
    wanted = {(name, o) for name, d in world.desired.items() for o in range(1, d.demand.count + 1)}
    pending = {(name, o) for name, p in result.plan.pending.items() for o in p.ordinals}
    placed = set(result.plan.placement)
    assert placed | pending == wanted and not placed & pending


@PROPERTY
@given(worlds())
def test_nothing_lands_where_it_may_not(world: World):
    """No slot on a lost node; every slot placed anew goes to an up, uncordoned, undrained
    node it has not failed on; lost nodes are down past their grace with moving allowed."""
    result = world.run()
    lost = set(result.lost)
    for name in lost:
        view = world.nodes[name]
        assert world.may_move and view.info.state == "down" and world.now - view.down_since >= world.grace
    assert not lost & set(result.plan.placement.values())
    for slot, node in result.changes.items():
        if node is None or world.placement.get(slot) == node:
            continue
        info = world.nodes[node].info
        assert info.state == "up" and not info.cordoned and not info.draining
        assert node not in world.failed.get(slot, ())


@PROPERTY
@given(worlds())
def test_sends_and_resends_go_only_to_connected_nodes(world: World):
    """Nothing is sent to a node without a session; a node is never both sent and resent."""
    result = world.run()
    connected = {name for name, view in world.nodes.items() if view.connected}
    assert {s.node for s in result.sends} <= connected
    assert set(result.resends) <= connected
    assert not {s.node for s in result.sends} & set(result.resends)


@PROPERTY
@given(worlds())
def test_reconciling_the_result_again_changes_nothing(world: World):
    """Idempotence: once a pass is carried out, a second pass at the same time has nothing
    to store, send, resend or announce."""
    world.step()
    again = world.run()
    assert not again.acts, again.log_fields()
    assert again.plan.placement == world.placement
