"""Which process belongs to which instance, and what a starting agent does with what it finds.

Pure functions over plain records of the process table (``ProcInfo``): no /proc, no signals,
no clock. ``proctable`` reads the records, ``tracking`` and ``agent`` act on the answers.

Vocabulary::

    leader      the process the agent spawned for an instance (its session and group leader)
    incarnation one spawn of an instance; a respawn is a new incarnation of the same id
    claim       what marks one incarnation's processes: its leader, session, cgroup, markers
    markers     GAFFER_NODE / GAFFER_TEMPLATE / GAFFER_INSTANCE in a process's environment
    orphan      a process whose parent died; the kernel re-parents it to the nearest child
                subreaper (the agent, when the agent is one) or to init

``descendants`` answers "which processes must die with this incarnation"::

    for each process, walking up its parents (memoised):
      it is a claimed leader                        -> that claim
      its parent belongs to a claim                 -> the parent's claim
      in a claim's session or process group         -> that claim (a pid is never reused
                                                       while it names a session or group)
      in a claim's cgroup                           -> that claim
      one of a claim's extra roots (adoption found) -> that claim
      carries this node's markers for an instance   -> that instance's claim
      otherwise                                     -> nobody

When several incarnations of one instance match (cgroup or markers are shared across
respawns), a process goes to the newest incarnation that started no later than it did, and to
the oldest when it is older than all of them: a leftover of a dead incarnation is never taken
for the new one's, and the new one's processes are never killed as leftovers. Zombies, init
and the agents themselves (``spare``) belong to nobody.

``plan_adoption`` decides, for an agent that starts, every process of its node: see its
docstring for the rule on processes of other agents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from gaffer.common.topics import instance_id as make_instance_id


@dataclass(frozen=True)
class ProcInfo:
    """One process as ``/proc`` shows it; env fields are None when absent or unreadable."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    start_ticks: int
    state: str = "S"
    node: str | None = None
    template: str | None = None
    instance: str | None = None
    agent_id: str | None = None
    spec: str | None = None
    cgroup: str | None = None

    @property
    def instance_id(self) -> str | None:
        if not self.template or not self.instance:
            return None
        return make_instance_id(self.template, self.instance)

    @property
    def alive(self) -> bool:
        return self.state not in ("Z", "X")


@dataclass(frozen=True)
class Claim:
    """What marks one incarnation's processes. ``key`` names it in the answer."""

    key: str
    instance_id: str
    leader: int
    leader_ticks: int
    cgroup: str | None = None
    roots: frozenset[tuple[int, int]] = frozenset()
    """(pid, start ticks) of processes found to be part of it (adoption), wherever they run."""
    agent_id: str | None = None
    """Markers count only on processes carrying this agent id (None: carrying none)."""


class _Index:
    """The claims, looked up every way a process can belong to one."""

    def __init__(self, claims: list[Claim], node: str) -> None:
        self.node = node
        self.by_leader: dict[tuple[int, int], Claim] = {(c.leader, c.leader_ticks): c for c in claims}
        self.by_root = {root: c for c in claims for root in c.roots}
        self.by_group: dict[int, list[Claim]] = {}
        self.by_cgroup: dict[str, list[Claim]] = {}
        self.by_marks: dict[tuple[str, str | None], list[Claim]] = {}
        for claim in claims:
            self.by_group.setdefault(claim.leader, []).append(claim)
            if claim.cgroup:
                self.by_cgroup.setdefault(claim.cgroup, []).append(claim)
            self.by_marks.setdefault((claim.instance_id, claim.agent_id), []).append(claim)

    def direct(self, proc: ProcInfo) -> Claim | None:
        """The claim a process belongs to by itself: session or group, cgroup, a root found at
        adoption, or its markers (on this node)."""
        for key in (proc.sid, proc.pgid):
            if key in self.by_group:
                return _pick(self.by_group[key], proc.start_ticks)
        if proc.cgroup and proc.cgroup in self.by_cgroup:
            return _pick(self.by_cgroup[proc.cgroup], proc.start_ticks)
        if (proc.pid, proc.start_ticks) in self.by_root:
            return self.by_root[(proc.pid, proc.start_ticks)]
        marks = (proc.instance_id, proc.agent_id)
        if proc.node == self.node and marks in self.by_marks:
            return _pick(self.by_marks[marks], proc.start_ticks)
        return None


def descendants(
    procs: Iterable[ProcInfo], claims: Iterable[Claim], node: str, spare: Iterable[int] = ()
) -> dict[str, tuple[int, ...]]:
    """Every claim's processes (sorted pids; the leader included while it lives)."""
    table = {p.pid: p for p in procs}
    claim_list = list(claims)
    index = _Index(claim_list, node)
    excluded = {0, 1, *spare}
    owner: dict[int, Claim | None] = {}

    def decide(proc: ProcInfo) -> Claim | None:
        if proc.pid in excluded:
            return None
        claim = index.by_leader.get((proc.pid, proc.start_ticks))
        if claim is not None:
            return claim
        parent = owner.get(proc.ppid)
        return parent if parent is not None else index.direct(proc)

    def resolve(pid: int) -> Claim | None:
        """Walk up to the first process already decided (or outside the table), then decide
        the chain top-down, so a parent is always decided before its children."""
        chain: list[int] = []
        seen: set[int] = set()
        current = pid
        while current in table and current not in owner and current not in seen:
            seen.add(current)
            chain.append(current)
            current = table[current].ppid
        for member in reversed(chain):
            owner[member] = decide(table[member])
        return owner[pid]

    answer: dict[str, list[int]] = {c.key: [] for c in claim_list}
    for pid, proc in table.items():
        if pid in excluded or not proc.alive:
            continue
        claim = resolve(pid)
        if claim is not None:
            answer[claim.key].append(pid)
    return {key: tuple(sorted(pids)) for key, pids in answer.items()}


def _pick(claims: list[Claim], start_ticks: int) -> Claim:
    """The newest incarnation that started no later than the process; else the oldest."""
    best: Claim | None = None
    for claim in claims:
        if claim.leader_ticks <= start_ticks and (best is None or claim.leader_ticks >= best.leader_ticks):
            best = claim
    if best is not None:
        return best
    return min(claims, key=lambda c: c.leader_ticks)


# ----------------------------------------------------------------------------- adoption


@dataclass(frozen=True)
class Candidate:
    """One incarnation found running: its leader and every other process that is part of it."""

    instance_id: str
    leader: ProcInfo
    members: tuple[ProcInfo, ...] = ()
    reason: str = ""

    @property
    def agent_id(self) -> str | None:
        return self.leader.agent_id


@dataclass(frozen=True)
class AdoptionPlan:
    """``adopt``: take over (oldest first per id); ``stop``: end with every member, ``reason``
    says why; ``left``: pids of this node's processes that belong to a live agent (or to no
    agent at all) and are not touched."""

    adopt: tuple[Candidate, ...] = ()
    stop: tuple[Candidate, ...] = ()
    left: tuple[int, ...] = ()

    def log_fields(self) -> dict[str, int]:
        return {"adopt": len(self.adopt), "stop": len(self.stop), "left": len(self.left)}


@dataclass(frozen=True)
class Identity:
    """Who is asking: the node, this agent's id, the ids of agents alive on this host."""

    node: str
    agent_id: str
    live_agents: frozenset[str] = field(default_factory=frozenset)

    def owns(self, agent_id: str | None) -> bool:
        """Processes this agent must settle: its own, and those of agents that are gone.

        A process without GAFFER_AGENT_ID was not started by an agent (``gaffer run``, a bare
        Manager) and one whose agent is alive (another ``gaffer start`` with the same node
        name in another directory, or a second agent refused by the controller) belongs to
        that agent: both are left alone."""
        if not agent_id:
            return False
        return agent_id == self.agent_id or agent_id not in self.live_agents


def plan_adoption(
    procs: Iterable[ProcInfo],
    who: Identity,
    wanted: frozenset[str] | set[str],
    leaders: Mapping[int, int] | None = None,
) -> AdoptionPlan:
    """What a starting agent does with every process of its node (``who.node``).

    The rule: a process is this agent's to settle when it carries this node's GAFFER_NODE and
    an agent id that is this agent's own or belongs to no live agent on this host (see
    ``Identity.owns``). Those are grouped per (agent id, instance id): the group's leader is the
    pid the spawn journal recorded (``leaders``: pid -> start ticks), else its oldest session
    leader, else its oldest process; every process that ``descendants`` gives to that leader
    is a member (the rest of the group, so a daemon the instance double-forked is part of it,
    never a duplicate). For each instance id, one group is kept: this agent's own
    first, then the one with the oldest leader; it is adopted if the id is in ``wanted`` and
    is a numbered instance, else stopped. Every other group is a duplicate and stopped.
    """
    table = [p for p in procs if p.alive]
    recorded = dict(leaders or {})
    groups: dict[tuple[str, str], list[ProcInfo]] = {}
    left: list[int] = []
    for proc in table:
        ident = proc.instance_id
        if proc.node != who.node or ident is None:
            continue
        if not who.owns(proc.agent_id):
            left.append(proc.pid)
            continue
        groups.setdefault((proc.agent_id or "", ident), []).append(proc)
    heads: dict[tuple[str, str], ProcInfo] = {key: _leader(g, recorded) for key, g in groups.items()}
    claims = [
        Claim(
            key=f"{agent}/{ident}", instance_id=ident, leader=head.pid,
            leader_ticks=head.start_ticks, agent_id=agent,
        )
        for (agent, ident), head in heads.items()
    ]
    members = descendants(table, claims, who.node)
    by_pid = {p.pid: p for p in table}
    per_id: dict[str, list[Candidate]] = {}
    for (agent, ident), head in heads.items():
        found = tuple(by_pid[pid] for pid in members[f"{agent}/{ident}"] if pid != head.pid)
        per_id.setdefault(ident, []).append(Candidate(ident, head, found))
    adopt: list[Candidate] = []
    stop: list[Candidate] = []
    for ident in sorted(per_id):
        ranked = sorted(
            per_id[ident], key=lambda c: (c.agent_id != who.agent_id, c.leader.start_ticks, c.leader.pid)
        )
        keep, *duplicates = ranked
        numbered = keep.leader.instance is not None and keep.leader.instance.isdecimal()
        if ident in wanted and numbered:
            adopt.append(keep)
        else:
            why = "a one-off run" if not numbered else "not assigned to this node"
            stop.append(_with_reason(keep, why))
        for dup in duplicates:
            stop.append(_with_reason(dup, f"a duplicate of pid {keep.leader.pid}"))
    return AdoptionPlan(tuple(adopt), tuple(stop), tuple(sorted(left)))


def _leader(group: list[ProcInfo], recorded: Mapping[int, int]) -> ProcInfo:
    journaled = [p for p in group if recorded.get(p.pid) == p.start_ticks]
    pool = journaled or [p for p in group if p.sid == p.pid] or group
    return min(pool, key=lambda p: (p.start_ticks, p.pid))


def _with_reason(candidate: Candidate, reason: str) -> Candidate:
    return Candidate(candidate.instance_id, candidate.leader, candidate.members, reason)
