"""ownership: which process belongs to which instance, and what a starting agent settles."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from gaffer.agent.ownership import (
    Claim,
    Identity,
    ProcInfo,
    descendants,
    plan_adoption,
)
from budget import examples

NODE = "n1"
AGENT = 900
ME = "me"


def proc(pid: int, ppid: int = 1, *, sid: int | None = None, pgid: int | None = None, ticks: int = 100,
         marks: tuple[str, str] | None = None, agent: str | None = ME, node: str = NODE,
         cgroup: str | None = None, state: str = "S") -> ProcInfo:
    template, instance = marks if marks else (None, None)
    return ProcInfo(
        pid=pid, ppid=ppid, pgid=pgid if pgid is not None else (sid if sid is not None else pid),
        sid=sid if sid is not None else pid, start_ticks=ticks, state=state,
        node=node if marks else None, template=template, instance=instance,
        agent_id=agent if marks else None, cgroup=cgroup,
    )


def claim(ident: str, leader: int, ticks: int = 100, **extra) -> Claim:
    return Claim(key=extra.pop("key", ident), instance_id=ident, leader=leader, leader_ticks=ticks,
                 agent_id=extra.pop("agent_id", ME), **extra)


class TestDescendants:
    def test_a_double_forked_daemon_belongs_to_its_instance(self):
        """A setsid daemon re-parented to the agent still belongs to the instance whose markers it carries."""
        procs = [
            proc(10, AGENT, marks=("web", "1")),                   # leader
            proc(11, 10, sid=10, marks=("web", "1")),              # a child in its session
            proc(20, AGENT, ticks=105, marks=("web", "1")),        # escaped: own session, orphaned
            proc(21, 20, sid=20, ticks=106, marks=("web", "1")),   # the daemon's child
            proc(30, AGENT, marks=("web", "2")),
        ]
        found = descendants(procs, [claim("web.1", 10), claim("web.2", 30)], NODE, spare=[AGENT])
        assert found == {"web.1": (10, 11, 20, 21), "web.2": (30,)}

    def test_session_and_tree_count_without_markers(self):
        """A process that cleared its environment is still found through its session or its parent."""
        procs = [
            proc(10, AGENT, marks=("web", "1")),
            proc(11, 10, sid=10),                 # env cleared, in the session
            proc(12, 11, sid=12, ticks=120),      # env cleared, own session, child of 11
            proc(40, 1, sid=40),                  # a stranger
        ]
        assert descendants(procs, [claim("web.1", 10)], NODE, [AGENT]) == {"web.1": (10, 11, 12)}

    def test_cgroup_and_extra_roots_count(self):
        """Processes in the instance's cgroup, and roots adoption found, belong to it."""
        procs = [
            proc(10, AGENT, marks=("web", "1"), cgroup="/g/web.1"),
            proc(50, 1, cgroup="/g/web.1"),
            proc(60, 1),
            proc(61, 60),
            proc(70, 1, ticks=6),        # the pid of a root, reused by a stranger
        ]
        roots = frozenset({(60, 100), (70, 5)})
        found = descendants(procs, [claim("web.1", 10, cgroup="/g/web.1", roots=roots)], NODE)
        assert found == {"web.1": (10, 50, 60, 61)}

    def test_leftovers_go_to_the_old_incarnation_and_new_processes_to_the_new(self):
        """With two incarnations of one id, a marked orphan goes to the newest one not younger than it."""
        procs = [
            proc(20, AGENT, ticks=150, marks=("web", "1")),     # leftover of the first incarnation
            proc(30, AGENT, ticks=200, marks=("web", "1")),     # the new leader
            proc(31, AGENT, ticks=230, marks=("web", "1")),     # the new one's daemon
        ]
        old = claim("web.1", 10, ticks=100, key="old")
        new = claim("web.1", 30, ticks=200, key="new")
        assert descendants(procs, [old, new], NODE, [AGENT]) == {"old": (20,), "new": (30, 31)}

    def test_markers_of_another_node_or_agent_do_not_count(self):
        """Markers count only with this node's name and the claim's agent id."""
        procs = [
            proc(20, 1, marks=("web", "1"), node="other"),
            proc(21, 1, marks=("web", "1"), agent="someone-else"),
            proc(22, 1, marks=("web", "1")),
        ]
        assert descendants(procs, [claim("web.1", 10)], NODE) == {"web.1": (22,)}

    def test_zombies_init_and_the_agent_belong_to_nobody(self):
        """Nothing excluded is ever reported, nor a zombie, nor a reused leader pid."""
        procs = [
            proc(1, 0, marks=("web", "1")),
            proc(AGENT, 1, marks=("web", "1")),
            proc(10, AGENT, marks=("web", "1"), state="Z"),
            proc(11, AGENT, sid=10),
        ]
        assert descendants(procs, [claim("web.1", 10)], NODE, [AGENT]) == {"web.1": (11,)}

    def test_a_cycle_in_bad_data_terminates(self):
        """Records that point at each other (impossible, but data is data) end the walk."""
        procs = [proc(5, 6), proc(6, 5)]
        assert descendants(procs, [claim("web.1", 10)], NODE) == {"web.1": ()}


@st.composite
def forests(draw):
    """Random process tables: pids 2..40, each parent earlier in the list (or init / the
    agent), random sessions, markers of a few instances, some zombies."""
    count = draw(st.integers(1, 30))
    procs: list[ProcInfo] = []
    for index in range(count):
        pid = 2 + index
        ppid = draw(st.sampled_from([1, AGENT] + [p.pid for p in procs]))
        sid = draw(st.sampled_from([pid] + [p.sid for p in procs] or [pid]))
        ordinal = draw(st.sampled_from([None, "1", "2", "3"]))
        agent = draw(st.sampled_from([ME, "dead", "alive"]))
        procs.append(ProcInfo(
            pid=pid, ppid=ppid, pgid=sid, sid=sid, start_ticks=draw(st.integers(0, 50)),
            state=draw(st.sampled_from(["S", "S", "S", "Z"])),
            node=NODE if ordinal else None, template="web" if ordinal else None,
            instance=ordinal, agent_id=agent if ordinal else None,
        ))
    leaders = draw(st.lists(st.sampled_from(procs), max_size=3, unique_by=lambda p: p.pid))
    claims = [
        Claim(key=f"c{i}", instance_id=p.instance_id or "web.9", leader=p.pid, leader_ticks=p.start_ticks,
              agent_id=p.agent_id or ME)
        for i, p in enumerate(leaders)
    ]
    return procs, claims


class TestDescendantProperties:
    @settings(max_examples=examples(300), deadline=None)
    @given(forests())
    def test_each_process_has_at_most_one_owner_and_never_init_the_agent_or_a_zombie(self, data):
        """Answers are disjoint and hold only live, non-excluded processes of the table."""
        procs, claims = data
        found = descendants(procs, claims, NODE, [AGENT])
        seen: list[int] = [pid for pids in found.values() for pid in pids]
        table = {p.pid: p for p in procs}
        assert len(seen) == len(set(seen))
        assert all(pid in table and table[pid].alive and pid not in (1, AGENT) for pid in seen)

    @settings(max_examples=examples(300), deadline=None)
    @given(forests())
    def test_children_follow_their_parent(self, data):
        """A live child of an owned process has the same owner unless it leads another claim."""
        procs, claims = data
        found = descendants(procs, claims, NODE, [AGENT])
        owner = {pid: key for key, pids in found.items() for pid in pids}
        leaders = {(c.leader, c.leader_ticks) for c in claims}
        for p in procs:
            if p.alive and p.ppid in owner and (p.pid, p.start_ticks) not in leaders:
                assert owner.get(p.pid) == owner[p.ppid]

    @settings(max_examples=examples(300), deadline=None)
    @given(forests())
    def test_live_leaders_own_themselves(self, data):
        """Every live claimed leader is in its own claim."""
        procs, claims = data
        found = descendants(procs, claims, NODE, [AGENT])
        table = {p.pid: p for p in procs}
        for c in claims:
            if table[c.leader].alive:
                assert c.leader in found[c.key]

    @settings(max_examples=examples(300), deadline=None)
    @given(forests())
    def test_unmarked_strangers_outside_every_session_are_left_alone(self, data):
        """A process with no markers, no claimed session and no owned ancestor is nobody's."""
        procs, claims = data
        stranger = ProcInfo(pid=99, ppid=1, pgid=99, sid=99, start_ticks=0)
        child = ProcInfo(pid=98, ppid=99, pgid=99, sid=99, start_ticks=0)
        found = descendants([*procs, stranger, child], claims, NODE, [AGENT])
        assert all(99 not in pids and 98 not in pids for pids in found.values())


def ident(live=("alive",)) -> Identity:
    return Identity(node=NODE, agent_id=ME, live_agents=frozenset(live))


class TestPlanAdoption:
    def test_adopts_what_is_wanted_with_its_daemons_and_stops_the_rest(self):
        """The leader is adopted with its double-forked daemon as a member; an unwanted id is stopped whole."""
        procs = [
            proc(10, 1, marks=("web", "1")),
            proc(20, 1, ticks=150, marks=("web", "1")),
            proc(30, 1, marks=("web", "2")),
            proc(31, 30, sid=30, marks=("web", "2")),
        ]
        plan = plan_adoption(procs, ident(), {"web.1"})
        [adopted] = plan.adopt
        assert (adopted.instance_id, adopted.leader.pid, [m.pid for m in adopted.members]) == ("web.1", 10, [20])
        [stopped] = plan.stop
        assert (stopped.leader.pid, [m.pid for m in stopped.members], stopped.reason) == (
            30, [31], "not assigned to this node")

    def test_processes_of_a_dead_agent_are_settled_and_of_a_live_one_left(self):
        """A dead agent's process is adopted (e.g. after the state dir was deleted); a live agent's, or no agent's, is untouched."""
        procs = [
            proc(10, 1, marks=("web", "1"), agent="dead"),
            proc(11, 1, marks=("web", "2"), agent="alive"),
            proc(12, 1, marks=("web", "3"), agent=None),
        ]
        plan = plan_adoption(procs, ident(), {"web.1", "web.2", "web.3"})
        assert [c.leader.pid for c in plan.adopt] == [10]
        assert plan.stop == () and plan.left == (11, 12)

    def test_one_process_per_ordinal_prefers_this_agents_own(self):
        """Two incarnations of one id from two agents: this agent's is kept, the other stopped as a duplicate."""
        procs = [
            proc(10, 1, ticks=50, marks=("web", "1"), agent="dead"),
            proc(20, 1, ticks=80, marks=("web", "1")),
        ]
        plan = plan_adoption(procs, ident(), {"web.1"})
        assert [c.leader.pid for c in plan.adopt] == [20]
        assert [(c.leader.pid, c.reason) for c in plan.stop] == [(10, "a duplicate of pid 20")]

    def test_the_journal_names_the_leader(self):
        """A journaled pid is the leader even when a member is older or leads its own session."""
        procs = [
            proc(10, 1, ticks=50, marks=("web", "1")),
            proc(20, 1, ticks=80, marks=("web", "1")),
        ]
        plan = plan_adoption(procs, ident(), {"web.1"}, leaders={20: 80})
        [adopted] = plan.adopt
        assert adopted.leader.pid == 20 and [m.pid for m in adopted.members] == [10]

    def test_one_off_runs_are_stopped(self):
        """``web.run-1`` is never adopted."""
        plan = plan_adoption([proc(10, 1, marks=("web", "run-1"))], ident(), {"web.run-1"})
        assert plan.adopt == () and [c.reason for c in plan.stop] == ["a one-off run"]

    @settings(max_examples=examples(300), deadline=None)
    @given(forests(), st.sets(st.sampled_from(["web.1", "web.2", "web.3"])))
    def test_at_most_one_per_id_and_nobody_both_adopted_and_stopped(self, data, wanted):
        """Adopted ids are wanted and unique; no pid is in two candidates; live agents' leaders are left."""
        procs, _ = data
        procs = [replace(p, ppid=1 if p.ppid == AGENT else p.ppid) for p in procs]
        plan = plan_adoption(procs, ident(), wanted)
        ids = [c.instance_id for c in plan.adopt]
        assert len(ids) == len(set(ids)) and set(ids) <= wanted
        pids = [p.pid for c in (*plan.adopt, *plan.stop) for p in (c.leader, *c.members)]
        assert len(pids) == len(set(pids))
        assert not set(plan.left) & {c.leader.pid for c in (*plan.adopt, *plan.stop)}
        settled = {
            p.pid for p in procs if p.alive and p.instance_id and p.agent_id in (ME, "dead")
        }
        assert settled <= set(pids)
