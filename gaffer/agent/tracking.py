"""Every descendant of every instance, tracked and stopped with it.

An instance is more than its leader: children in its process group, and daemons that
double-forked out of it (setsid + fork) into a session of their own. ``Tracker`` keeps one
``Track`` per incarnation and, when the instance is stopped or its leader exits, signals all
of them. Two modes, chosen once per agent and reported to the controller:

``cgroup``
    Each instance in its own cgroup v2 (``cgroups``). Nothing can leave it; ``cgroup.kill``
    ends all of it. This is what systemd does for a service. Moving a process into a cgroup
    costs about 0.1 ms of kernel time on a host without ``favordynmods`` (a quarter of a
    spawn), and it holds up every fork meanwhile, so instances are moved in batches just
    after a burst of spawns (``PLACE_DELAY``, at most ``PLACE_MAX_WAIT``), in a worker thread, together with whatever they
    forked before the move (one /proc scan per batch). Until then an instance is tracked as in
    subreaper mode.
``subreaper``
    No usable cgroups. The agent is a child subreaper (``reaper``), so orphans come back to
    it; a descendant is found by its session, its ancestry, or the instance's GAFFER_ markers
    in its environment (``ownership.descendants``), in a scan of /proc.

In both modes the process group is signalled at once (the leader's zombie pins its id until
the leader is reaped). A scan of /proc reads every process (about 20 us each), so it runs in a
worker thread, one at a time, batching every request made meanwhile; victims are signalled by
pidfd after checking their start time, so a reused pid is never hit. Scans happen on every
stop, and on every leader exit in subreaper mode (in cgroup mode an exit costs one write to
``cgroup.kill``, plus a scan only if the instance was not yet placed in its cgroup), after
``SCAN_DELAY`` so that one scan serves a burst; after a SIGKILL the scan is repeated
(``SCAN_ROUNDS``) until it finds nothing, since a dying daemon may have forked.

The stop signal goes to each process once: the scan leaves out the group and the cgroup,
which were signalled directly.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import signal as _signal
from dataclasses import dataclass, field
from typing import Callable, Iterable

from gaffer.agent import adoption
from gaffer.agent.cgroups import CgroupTree, Place, procs as cgroup_procs
from gaffer.agent.ownership import Claim, ProcInfo, descendants
from gaffer.agent import reaper as reaping
from gaffer.agent.reaper import Reaper
from gaffer.common.tasks import cancel_and_wait

log = logging.getLogger("gaffer.tracking")

CGROUP = "cgroup"
SUBREAPER = "subreaper"
MODES = ("auto", CGROUP, SUBREAPER)
SCAN_ROUNDS = 3
PLACE_DELAY = 0.02
"""Spawned instances are moved into their cgroups once no spawn came for this long, so a burst
of spawns is not slowed by the moves and one batch (one /proc scan) serves it..."""
PLACE_MAX_WAIT = 1.0
"""...but never later than this after the first of them."""
SCAN_DELAY = 0.02
"""Scans wait this long first, so a burst of exits or stops is served by one scan, and scans
never take more than a share of the agent's time however fast instances die."""
FINISH_TIMEOUT = 10.0
REMOVE_TRIES = 6
REMOVE_DELAY = 0.05
_FALLBACK_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.EOPNOTSUPP, errno.EBUSY, errno.EINVAL)
_serials = itertools.count(1)


@dataclass(eq=False)
class Track:
    """One incarnation of an instance: its leader and how its processes are found."""

    instance_id: str
    pid: int
    agent_id: str | None = None
    place: Place | None = None
    roots: frozenset[tuple[int, int]] = frozenset()
    ticks: int | None = None
    target: Place | None = None
    """cgroup mode: the cgroup the instance is to be moved into (``place`` once it is)."""
    serial: str = field(default_factory=lambda: str(next(_serials)))

    @property
    def may_have_escaped(self) -> bool:
        """cgroup mode, not yet placed: some of it may be outside any cgroup of ours, so an
        exit is followed by a scan too."""
        return self.target is not None and self.place is None

    def claim_data(self) -> tuple:
        return (self.serial, self.instance_id, self.pid, self.ticks,
                self.place.name if self.place else None, self.roots, self.agent_id)


class Tracker:
    """Tracks the instances of one Manager. Use inside a running loop; ``aclose`` when done."""

    def __init__(
        self,
        node: str,
        agent_id: str | None = None,
        cgroups: CgroupTree | None = None,
        reaper: Reaper | None = None,
        reason: str = "",
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.node = node
        self.agent_id = agent_id
        self.cgroups = cgroups
        self._reaper = reaper
        self.reason = reason if cgroups is None else ""
        """Why cgroups are not used (empty in cgroup mode)."""
        self._loop = loop or asyncio.get_running_loop()
        self._live: set[Track] = set()
        self._refs: dict[str, int] = {}
        self._removals: dict[str, asyncio.TimerHandle] = {}
        self._requests: dict[Track, int] = {}
        self._scanner: asyncio.Task | None = None
        self._unplaced: list[Track] = []
        self._placer: asyncio.Task | None = None
        self._last_spawn = 0.0
        self._strays: set[asyncio.TimerHandle] = set()
        self._stray_ends: set[asyncio.Future[None]] = set()
        """One per ``terminate`` whose KILL has not come yet (``finish_strays`` waits on them)."""
        self._exit_watches: set[int] = set()
        """pidfds of the processes ``terminate`` is stopping, until each exits."""
        self._used: dict[str, Place] = {}
        self._me = os.getpid()
        self.scans = 0
        self.signalled = 0

    @classmethod
    def for_host(
        cls, node: str, agent_id: str | None, mode: str = "auto", reaper: Reaper | None = None
    ) -> "Tracker":
        """cgroup mode where the host allows it (``mode`` "auto" or "cgroup"), else subreaper."""
        if mode not in MODES:
            raise ValueError(f"tracking: {mode!r} is not one of {', '.join(MODES)}")
        tree, reason = (None, "subreaper mode was asked for") if mode == SUBREAPER else (
            CgroupTree.probe(node, agent_id or "local")
        )
        if tree is None:
            log.info("tracking descendants without cgroups: %s", reason)
        return cls(node, agent_id, tree, reaper, reason)

    @property
    def reaper(self) -> Reaper | None:
        """The one given, else the process's (``reaper.install``), else none."""
        return self._reaper if self._reaper is not None else reaping.installed()

    @property
    def mode(self) -> str:
        return CGROUP if self.cgroups is not None else SUBREAPER

    # ------------------------------------------------------------------------- tracks

    def spawned(self, instance_id: str, pid: int) -> Track:
        """A leader was just spawned: track it, and (cgroup mode) move it into its cgroup
        with the next batch (see the module docstring)."""
        track = Track(instance_id, pid, self.agent_id)
        if self.cgroups is not None:
            track.target = self.cgroups.place(instance_id)
            self._unplaced.append(track)
            self._last_spawn = self._loop.time()
            if self._placer is None or self._placer.done():
                self._placer = self._loop.create_task(self._place_loop())
        self._live.add(track)
        return track

    async def _place_loop(self) -> None:
        started = self._loop.time()
        while self._unplaced:
            await asyncio.sleep(PLACE_DELAY)  # gather the spawns of one burst
            now = self._loop.time()
            if now - self._last_spawn < PLACE_DELAY and now - started < PLACE_MAX_WAIT:
                continue  # the burst goes on: moves now would slow it down
            started = now
            batch = [t for t in self._unplaced if t in self._live]
            self._unplaced = []
            if not batch or self.cgroups is None:
                continue
            claims = [t.claim_data() for t in self._live]
            jobs = [(t.serial, t.target, t.pid) for t in batch if t.target is not None]
            failure = await self._loop.run_in_executor(
                None, _place, self.cgroups, self.node, jobs, claims, self._me
            )
            if failure is not None:
                self._cgroup_failed(*failure)
                if self.cgroups is None:
                    return
            for track in batch:
                self._placed(track)

    def _placed(self, track: Track) -> None:
        """The worker moved ``track`` (and what it had forked) into its cgroup."""
        place = track.target
        assert place is not None and self.cgroups is not None
        if track in self._live:
            track.place = place
            self._hold(place)
            return
        if any(t.target is not None and t.target.fs == place.fs for t in self._live):
            # A newer incarnation shares the cgroup, and the move may have taken it in by its
            # markers (it was not among the claims yet): kill only what a scan says is ours.
            self._request(track, _signal.SIGKILL)
        else:
            self.cgroups.kill(place)  # it ended while being moved: all that was moved in is left over
        self._used.setdefault(place.fs, place)
        if place.fs not in self._refs:
            self._schedule_removal(place, 0)

    def adopted(
        self,
        instance_id: str,
        pid: int,
        ticks: int,
        agent_id: str | None,
        cgroup: str | None,
        members: Iterable[ProcInfo] = (),
    ) -> Track:
        """A leader an earlier agent spawned, with the members adoption found around it."""
        members = list(members)
        track = Track(
            instance_id, pid, agent_id, ticks=ticks,
            roots=frozenset((m.pid, m.start_ticks) for m in members),
        )
        if self.cgroups is not None:
            place = self.cgroups.place_of(cgroup) if cgroup else None
            if place is None:
                place = self._move_in(instance_id, [pid, *(m.pid for m in members)])
            if place is not None:
                track.place = place
                self._hold(place)
        self._live.add(track)
        return track

    def signal(self, track: Track, sig: int) -> None:
        """Send ``sig`` to the whole incarnation: group, cgroup, and what a scan finds."""
        _killpg(track.pid, sig)
        if track.place is not None and self.cgroups is not None:
            if sig == _signal.SIGKILL:
                self.cgroups.kill(track.place)
            else:
                for pid in cgroup_procs(track.place.fs):
                    _signal_outside_group(pid, track.pid, sig)
        self._request(track, sig)

    def leftovers(self, track: Track) -> None:
        """The leader has exited (not yet reaped): SIGKILL whatever is left of the incarnation."""
        _killpg(track.pid, _signal.SIGKILL)
        in_cgroup = track.place is not None and self.cgroups is not None
        if in_cgroup:
            self.cgroups.kill(track.place)
        if not in_cgroup or track.may_have_escaped:
            if track.ticks is None:
                track.ticks = _ticks(track.pid)
            self._request(track, _signal.SIGKILL)
        if self.reaper is not None:
            self.reaper.kick()

    def ended(self, track: Track) -> None:
        """The leader was reaped; its cgroup is removed once nothing uses it."""
        self._live.discard(track)
        if track.place is not None:
            self._release(track.place)

    def terminate(self, leader: ProcInfo, members: Iterable[ProcInfo], grace: float) -> None:
        """End an incarnation nobody adopts (found at start): TERM to the leader and every
        member now, SIGKILL after ``grace`` to those still the same processes, then to its
        cgroup; the empty cgroup is removed."""
        victims = [(p.pid, p.start_ticks) for p in (leader, *members)]
        for pid, ticks in victims:
            _signal_exact(pid, ticks, _signal.SIGTERM)
        place = None
        if self.cgroups is not None and leader.cgroup:
            place = self.cgroups.place_of(leader.cgroup)
        ended: asyncio.Future[None] = self._loop.create_future()
        self._stray_ends.add(ended)
        handle = self._loop.call_later(grace, self._finish, leader, victims, place, ended)
        self._strays.add(handle)
        self._watch_exits(victims, lambda: self._finish_early(handle, leader, victims, place, ended))

    def _watch_exits(self, victims: list[tuple[int, int]], all_gone: Callable[[], None]) -> None:
        """Call ``all_gone`` once every victim has exited (a pidfd each): a leftover that
        obeys TERM ends its stop then, not at the end of its grace (an agent stopping would
        otherwise wait that grace out)."""
        left: set[int] = set()
        for pid, ticks in victims:
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue  # already gone
            if _ticks(pid) != ticks:
                os.close(pidfd)
                continue
            left.add(pidfd)

        def exited(pidfd: int) -> None:
            self._loop.remove_reader(pidfd)
            os.close(pidfd)
            left.discard(pidfd)
            self._exit_watches.discard(pidfd)
            if not left:
                all_gone()

        if not left:
            self._loop.call_soon(all_gone)
        for pidfd in left:
            self._exit_watches.add(pidfd)
            self._loop.add_reader(pidfd, exited, pidfd)

    def _finish_early(
        self, handle: asyncio.TimerHandle, leader: ProcInfo, victims: list[tuple[int, int]],
        place: Place | None, ended: asyncio.Future[None],
    ) -> None:
        if handle.cancelled() or ended.done():
            return
        handle.cancel()
        self._strays.discard(handle)
        self._finish(leader, victims, place, ended)

    async def finish_strays(self, timeout: float) -> int:
        """Let the stops ``terminate`` began reach their KILL (each at its grace; at most
        ``timeout`` seconds in all): an agent going away must not leave a process it was
        stopping running. Returns how many were in progress."""
        pending = [ended for ended in self._stray_ends if not ended.done()]
        if pending:
            log.info("finishing %d stops of leftover processes (at most %gs)", len(pending), timeout)
            await asyncio.wait(pending, timeout=timeout)
        return len(pending)

    def _finish(
        self, leader: ProcInfo, victims: list[tuple[int, int]], place: Place | None, ended: asyncio.Future[None]
    ) -> None:
        self._stray_ends.discard(ended)
        if not ended.done():
            ended.set_result(None)
        self._strays = {h for h in self._strays if not h.cancelled() and h.when() > self._loop.time()}
        if _ticks(leader.pid) == leader.start_ticks:
            _killpg(leader.pid, _signal.SIGKILL)
        for pid, ticks in victims:
            _signal_exact(pid, ticks, _signal.SIGKILL)
        if place is not None and self.cgroups is not None:
            self.cgroups.kill(place)
            self._used.setdefault(place.fs, place)
            if place.fs not in self._refs:
                self._schedule_removal(place, 0)
        if self.reaper is not None:
            self.reaper.kick()

    async def aclose(self, finish: bool = False) -> None:
        """Stop scanning; leave processes and cgroups as they are (the agent may restart),
        removing only the cgroups left empty. ``finish`` (everything is being stopped): first
        let the scans in flight kill what they find, and give killed processes a moment to
        leave their cgroups (at most ``FINISH_TIMEOUT`` seconds in all)."""
        loop = self._loop
        deadline = loop.time() + FINISH_TIMEOUT
        if finish and self._scanner is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._scanner), FINISH_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("descendant scans did not finish in %gs", FINISH_TIMEOUT)
        await cancel_and_wait(self._scanner)
        await cancel_and_wait(self._placer)
        for handle in (*self._removals.values(), *self._strays):
            handle.cancel()
        self._removals.clear()
        self._strays.clear()
        for ended in self._stray_ends:
            ended.cancel()
        self._stray_ends.clear()
        for pidfd in self._exit_watches:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        self._exit_watches.clear()
        if self.cgroups is None:
            return
        unused = [p for p in self._used.values() if p.fs not in self._refs]
        while finish and unused and loop.time() < deadline:
            unused = [p for p in unused if cgroup_procs(p.fs)]
            if unused:
                await asyncio.sleep(REMOVE_DELAY)  # killed processes are still leaving
        self.cgroups.prune(p for p in self._used.values() if p.fs not in self._refs)

    # ------------------------------------------------------------------------- cgroups

    def _cgroup_failed(self, place: Place, exc: OSError) -> None:
        if exc.errno == errno.ESRCH:
            return
        if exc.errno in _FALLBACK_ERRORS or exc.errno == errno.ENOENT:
            self.reason = f"cannot move a process into {place.fs}: {exc.strerror}"
            log.warning("cgroups unusable, tracking descendants without them: %s", self.reason)
            self.cgroups = None
        else:
            log.warning("%s: %s", place.fs, exc)

    def _move_in(self, instance_id: str, pids: list[int]) -> Place | None:
        assert self.cgroups is not None
        place = self.cgroups.place(instance_id)
        try:
            self.cgroups.ensure(place)
            for pid in pids:
                try:
                    self.cgroups.move(place, pid)
                except ProcessLookupError:
                    pass
        except OSError as exc:
            self._cgroup_failed(place, exc)
            return None
        return place

    def _hold(self, place: Place) -> None:
        self._refs[place.fs] = self._refs.get(place.fs, 0) + 1
        self._used[place.fs] = place
        handle = self._removals.pop(place.fs, None)
        if handle is not None:
            handle.cancel()

    def _release(self, place: Place) -> None:
        left = self._refs.get(place.fs, 1) - 1
        if left > 0:
            self._refs[place.fs] = left
            return
        self._refs.pop(place.fs, None)
        self._schedule_removal(place, 0)

    def _schedule_removal(self, place: Place, attempt: int) -> None:
        self._removals[place.fs] = self._loop.call_later(
            REMOVE_DELAY * 2**attempt, self._remove, place, attempt
        )

    def _remove(self, place: Place, attempt: int) -> None:
        """Killed processes take a moment to leave; try again a few times, then leave it to
        the cleanup at the next start."""
        self._removals.pop(place.fs, None)
        if place.fs in self._refs or self.cgroups is None:
            return
        if not self.cgroups.remove(place) and attempt + 1 < REMOVE_TRIES:
            self._schedule_removal(place, attempt + 1)

    # ------------------------------------------------------------------------- scans

    def _request(self, track: Track, sig: int) -> None:
        previous = self._requests.get(track)
        if previous is None or sig == _signal.SIGKILL:
            self._requests[track] = sig
        if self._scanner is None or self._scanner.done():
            self._scanner = self._loop.create_task(self._scan_loop())

    async def _scan_loop(self) -> None:
        rounds: dict[Track, int] = {}
        while self._requests:
            await asyncio.sleep(SCAN_DELAY)  # gather the exits and stops of one burst
            batch, self._requests = self._requests, {}
            claims = [t.claim_data() for t in self._live | set(batch)]
            wanted = {t.serial: t for t in batch}
            self.scans += 1
            found, orphans = await self._loop.run_in_executor(
                None, _scan, self.node, claims, {s: _excluded(t) for s, t in wanted.items()}, self._me
            )
            killed = False
            for serial, victims in found.items():
                track = wanted[serial]
                sig = batch[track]
                sent = sum(_signal_exact(pid, ticks, sig) for pid, ticks in victims)
                self.signalled += sent
                if sent:
                    log.info("%s: signalled %d escaped descendants with %s", track.instance_id, sent,
                             _signal.Signals(sig).name)
                if sent and sig == _signal.SIGKILL and rounds.get(track, 0) < SCAN_ROUNDS:
                    rounds[track] = rounds.get(track, 0) + 1
                    killed = True
                    self._requests.setdefault(track, sig)
            if self.reaper is not None:
                for pid in orphans:
                    self.reaper.watch(pid)
                if killed:
                    self.reaper.kick()


def _place(
    cgroups: CgroupTree, node: str, jobs: list[tuple[str, Place, int]], claims_data: list[tuple], me: int
) -> tuple[Place, OSError] | None:
    """In a worker thread: move each leader into its cgroup, then (one /proc scan) whatever
    it forked before that; the first cgroup failure that is not a vanished process, if any."""
    for _, place, pid in jobs:
        try:
            cgroups.ensure(place)
            cgroups.move(place, pid)
        except ProcessLookupError:
            continue
        except OSError as exc:
            return place, exc
    procs = adoption.snapshot()
    table = {p.pid: p for p in procs}
    claims = []
    for serial, ident, pid, ticks, cgroup, roots, agent_id in claims_data:
        leader = table.get(pid)
        claims.append(Claim(serial, ident, pid, ticks if ticks is not None else (
            leader.start_ticks if leader is not None else -1), cgroup, roots, agent_id))
    owners = descendants(procs, claims, node, spare=(me,))
    for serial, place, pid in jobs:
        inside = set(cgroup_procs(place.fs))
        for member in owners.get(serial, ()):
            if member != pid and member not in inside:
                try:
                    cgroups.move(place, member)
                except OSError:
                    continue
    return None


def _excluded(track: Track) -> tuple[int, str | None]:
    """What a scan must leave out for ``track``: its group, and its cgroup's directory."""
    return track.pid, track.place.fs if track.place else None


def _scan(
    node: str, claims_data: list[tuple], wanted: dict[str, tuple[int, str | None]], me: int
) -> tuple[dict[str, list[tuple[int, int]]], list[int]]:
    """In a worker thread: read /proc, decide ownership, return (pid, ticks) victims per
    wanted serial and the live orphans of this process that belong to an instance."""
    procs = adoption.snapshot()
    table = {p.pid: p for p in procs}
    claims = []
    for serial, ident, pid, ticks, cgroup, roots, agent_id in claims_data:
        leader = table.get(pid)
        if ticks is None:
            ticks = leader.start_ticks if leader is not None else -1
        claims.append(Claim(serial, ident, pid, ticks, cgroup, roots, agent_id))
    owners = descendants(procs, claims, node, spare=(me,))
    found: dict[str, list[tuple[int, int]]] = {}
    for serial, (group, cgroup_fs) in wanted.items():
        inside = set(cgroup_procs(cgroup_fs)) if cgroup_fs else set()
        found[serial] = [
            (pid, table[pid].start_ticks)
            for pid in owners.get(serial, ())
            if table[pid].pgid != group and pid not in inside
        ]
    owned = {pid for pids in owners.values() for pid in pids}
    orphans = [p.pid for p in procs if p.ppid == me and p.pid in owned]
    return found, orphans


def _signal_exact(pid: int, ticks: int, sig: int) -> bool:
    """Signal ``pid`` only if it is still the process that started at ``ticks``."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if _ticks(pid) != ticks:
            return False
        _signal.pidfd_send_signal(pidfd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(pidfd)


def _ticks(pid: int) -> int | None:
    try:
        return adoption.read_stat(pid).start_ticks
    except (OSError, ValueError, IndexError):
        return None


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _signal_outside_group(pid: int, group: int, sig: int) -> None:
    """Signal a cgroup member unless ``killpg(group)`` already reached it."""
    try:
        if os.getpgid(pid) != group:
            os.kill(pid, sig)
    except OSError:
        pass
