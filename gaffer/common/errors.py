"""Every error gaffer raises on purpose, in one tree.

Each class carries a stable ``code`` that crosses process boundaries (wire replies, HTTP bodies,
CLI exit messages). Callers match on the class or the code, never on message text. What a
class knows beyond its message (the ``.name`` of a TemplateNotFound, the ``.argument`` of an
InvalidArgument) travels too, in ``details`` (the names in ``DETAILS``), so ``from_wire`` rebuilds
an error equal to the one raised on the other side::

    GafferError                      code
    ├── TemplateError                "invalid_template"   bad template input, lists every Problem
    ├── ConfigError                  "invalid_config"     bad daemon configuration
    ├── NotFound                     "not_found"
    │   ├── TemplateNotFound         "template_not_found"
    │   ├── InstanceNotFound         "instance_not_found"
    │   └── NodeNotFound             "node_not_found"
    ├── Conflict                     "conflict"
    │   ├── TemplateExists           "template_exists"
    │   └── NodeAlive                "node_alive"         forget refused: the node is not down
    ├── InvalidRequest               "invalid_request"    a well-formed request that cannot apply
    │   ├── InvalidArgument          "invalid_argument"   a request argument of the wrong type,
    │   │                                                 size, pattern or range (.argument)
    │   ├── LimitExceeded            "limit_exceeded"     a count over a controller's limit
    │   ├── StdinNotEnabled          "stdin_not_enabled"
    │   └── InvalidSignal            "invalid_signal"
    ├── Forbidden                    "forbidden"          the caller's role may not do this op
    │                                                     (.op, .role: the least role it needs)
    ├── IllegalTransition            "illegal_transition" an instance state change its lifecycle
    │                                                     forbids (a bug, never the user's input)
    ├── LockHeld                     "lock_held"          a lock file another process holds (.holder)
    ├── ProcessError                 "process_error"
    │   ├── SpawnError               "spawn_failed"       exec failed (missing binary, bad cwd, uid)
    │   ├── AdoptError               "adopt_failed"       the pid to adopt is gone or reused
    │   ├── StdinClosed              "stdin_closed"
    │   └── StdinFull                "stdin_full"         bounded stdin buffer would overflow
    ├── SubscriberTooSlow            "subscriber_too_slow" a bounded event queue overflowed
    ├── SubscriptionClosed           "subscription_closed" read from a subscription closed on purpose
    ├── ControllerUnreachable        "unreachable"        no answer from the controller in time
    ├── ShuttingDown                 "shutting_down"      the controller stopped before it carried
    │                                                     out the request: retry once it is back
    ├── StorageError                 "storage_error"      the controller's store cannot be written
    │   │                                                 (disk full, I/O error, read-only): nothing
    │   │                                                 of the change was saved
    │   ├── StorageDamaged           "storage_damaged"    the store's file is corrupt: stop, check,
    │   │                                                 export or restore a backup
    │   ├── StoreUnavailable         "store_unavailable"  the store cannot be reached (no etcd
    │   │   │                                             endpoint answered in time; .endpoint:
    │   │   │                                             the last one tried): nothing was saved
    │   │   └── NoQuorum             "no_quorum"          etcd answered, but its members have no
    │   │                                                 leader: too few of them are up
    │   ├── StoreRejected            "store_rejected"     etcd refused the request (.status: its
    │   │                                                 gRPC code; .reason a stable word)
    │   └── CompareFailed            "compare_failed"     a guarded write's compare did not hold
    │       └── LeadershipLost       "leadership_lost"    the election key no longer holds this
    │                                                     controller's term (.term)
    ├── Unauthorized                 "unauthorized"       an HTTP request without a valid token
    ├── PreconditionFailed           "precondition_failed" an HTTP write whose If-Match (or
    │                                                     If-None-Match) does not hold: someone
    │                                                     changed the template since it was read
    ├── UnsupportedMediaType         "unsupported_media_type" an HTTP body in a format the route
    │                                                     does not read
    ├── Throttled                    "throttled"          too many failed logins from one peer
    │                                                     (.retry_after: seconds to wait)
    ├── TooLarge                     "too_large"          an answer bigger than one message:
    │                                                     ask for it in pages (limit/continue)
    ├── KeeperError                  "keeper_error"       the agent's fd keeper
    │   ├── KeeperUnavailable        "keeper_unavailable" none can be reached or started
    │   ├── KeeperBusy               "keeper_busy"        another agent is connected to it
    │   └── KeeperRejected           "keeper_rejected"    it refused a request (.reason)
    ├── RemoteError                  (the remote code)    an error code this side does not know
    └── ProtocolError                "protocol_error"     a wire message refused; .reason says why

Rebuilt from the wire, each class has the same code, message and details as the original
(``tests/unit/test_errors.py`` checks every class of the tree).

Three exceptions live outside the tree because they never leave the module that raises them;
each is turned into a tree error (or an exit status) at that module's edge:
``schema.Invalid`` (a value that does not fit a wire schema) becomes ProtocolError in
``protocol.decode``; the keeper's ``server.RequestError`` becomes a reply code that the
agent's ``KeeperClient`` raises as KeeperRejected; the keeper's ``daemon.StartupError`` becomes
the keeper process's exit status and message, which ``spawn_keeper`` reports as
KeeperUnavailable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class GafferError(Exception):
    """Base of every deliberate gaffer error."""

    code = "error"
    DETAILS: tuple[str, ...] = ()
    """Attributes beyond the message that travel in ``details`` (plain strings or numbers)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> dict:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        details = {name: value for name in self.DETAILS if (value := getattr(self, name, None)) is not None}
        if details:
            data["details"] = details
        return data


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one field of one template (or config section)."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        prefix = ".".join(part for part in (self.where, self.field) if part)
        return f"{prefix}: {self.message}" if prefix else self.message


class TemplateError(GafferError):
    """One or more templates are invalid; ``problems`` lists all of them."""

    code = "invalid_template"
    DETAILS = ("source",)

    def __init__(self, problems: list[Problem], source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            message = head + lines[0]
        else:
            message = head + f"{len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)
        super().__init__(message)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["problems"] = [
            {"where": p.where, "field": p.field, "message": p.message} for p in self.problems
        ]
        return data


class ConfigError(GafferError):
    code = "invalid_config"


class NotFound(GafferError):
    code = "not_found"


class TemplateNotFound(NotFound):
    code = "template_not_found"
    DETAILS = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__(f"no template named {name!r}")
        self.name = name


class InstanceNotFound(NotFound):
    code = "instance_not_found"
    DETAILS = ("instance_id",)

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no instance {instance_id!r}")
        self.instance_id = instance_id


class NodeNotFound(NotFound):
    code = "node_not_found"
    DETAILS = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__(f"no node named {name!r} (see `gafferctl nodes`)")
        self.name = name


class Conflict(GafferError):
    code = "conflict"


class TemplateExists(Conflict):
    code = "template_exists"
    DETAILS = ("name",)

    def __init__(self, name: str) -> None:
        super().__init__(f"template {name!r} already exists")
        self.name = name


class NodeAlive(Conflict):
    """Only a node that is down can be forgotten: one that is up or suspect still runs things."""

    code = "node_alive"


class InvalidRequest(GafferError):
    code = "invalid_request"


class InvalidArgument(InvalidRequest):
    """A request argument that is missing, of the wrong type, too long, or out of range."""

    code = "invalid_argument"
    DETAILS = ("argument",)

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"argument {argument!r}: {message}")
        self.argument = argument


class LimitExceeded(InvalidRequest):
    """A change that would make a template, or all of them, want more instances than allowed."""

    code = "limit_exceeded"


class StdinNotEnabled(InvalidRequest):
    code = "stdin_not_enabled"
    DETAILS = ("instance_id",)

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"stdin of {instance_id!r} is not enabled: set redirect_input = true in its template"
        )
        self.instance_id = instance_id


class InvalidSignal(InvalidRequest):
    code = "invalid_signal"


class Forbidden(GafferError):
    """The caller is known but its role is below what the operation needs (``common/roles.py``).

    ``op`` names the operation, ``role`` the least role that may call it (``viewer``,
    ``operator``, ``admin``)."""

    code = "forbidden"
    DETAILS = ("op", "role")

    def __init__(self, op: str, role: str, message: str | None = None) -> None:
        super().__init__(message or f"{op!r} needs the {role} role")
        self.op = op
        self.role = role


class IllegalTransition(GafferError):
    """An instance state change its lifecycle forbids: a bug in the agent, never user input."""

    code = "illegal_transition"


class LockHeld(GafferError):
    """A lock file (data dir, socket) is held by another process; ``holder`` says which."""

    code = "lock_held"
    DETAILS = ("holder",)

    def __init__(self, holder: str) -> None:
        super().__init__(f"held by {holder}")
        self.holder = holder


class ProcessError(GafferError):
    code = "process_error"


class SpawnError(ProcessError):
    code = "spawn_failed"


class AdoptError(ProcessError):
    """The pid to adopt is gone or now belongs to another process."""

    code = "adopt_failed"


class StdinClosed(ProcessError):
    code = "stdin_closed"


class StdinFull(ProcessError):
    code = "stdin_full"


class SubscriberTooSlow(GafferError):
    code = "subscriber_too_slow"


class SubscriptionClosed(GafferError):
    code = "subscription_closed"


class ControllerUnreachable(GafferError):
    code = "unreachable"


class ShuttingDown(GafferError):
    """The controller is stopping: the request was refused, or cut short, and is not done
    (what it had already stored stays stored)."""

    code = "shutting_down"


class StorageError(GafferError):
    """The controller's store refused a read or write; nothing of the change was saved.

    ``reason`` is a stable machine word for logs and counters: ``disk_full``, ``io_error``,
    ``read_only``, ``busy``, ``cannot_open`` or ``error``; ``damaged`` on StorageDamaged.
    """

    code = "storage_error"
    DETAILS = ("reason",)
    reason = "error"

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


class StorageDamaged(StorageError):
    """The store's file is corrupt (SQLite found a damaged page or index)."""

    code = "storage_damaged"
    reason = "damaged"

    def __init__(self, message: str) -> None:
        super().__init__(message, "damaged")


class StoreUnavailable(StorageError):
    """The store did not take the operation: no etcd endpoint answered in time (refused,
    reset, or silent past the call's timeout). The controller's memory is unchanged: retry
    later, or against the controller that leads.

    ``endpoint`` is the last one tried; the message names every endpoint and what went wrong
    with each. A write that timed out may still have been applied: callers guard their writes
    (``CompareFailed``) so that trying again is safe.
    """

    code = "store_unavailable"
    DETAILS = ("reason", "endpoint")
    reason = "unavailable"

    def __init__(self, message: str, endpoint: str | None = None, reason: str = "unavailable") -> None:
        super().__init__(message, reason)
        self.endpoint = endpoint


class NoQuorum(StoreUnavailable):
    """etcd members answered but none has a leader: fewer than a quorum of them are up or can
    reach each other. Nothing can be read or written until enough of them return."""

    code = "no_quorum"
    reason = "no_quorum"

    def __init__(self, message: str, endpoint: str | None = None) -> None:
        super().__init__(message, endpoint, "no_quorum")


class StoreRejected(StorageError):
    """etcd answered a request with an error: ``status`` is its gRPC status code, ``reason`` a
    stable word (``lease_not_found``, ``compacted``, ``invalid``, ``too_large``, ``error``)."""

    code = "store_rejected"
    DETAILS = ("reason", "status")
    status = 0

    def __init__(self, message: str, status: int = 0, reason: str = "error") -> None:
        super().__init__(message, reason)
        self.status = status


class CompareFailed(StorageError):
    """A transaction's compares did not hold in etcd, so none of its writes were made (someone
    changed a key it was guarded by since it was read)."""

    code = "compare_failed"
    reason = "compare_failed"

    def __init__(self, message: str, reason: str = "compare_failed") -> None:
        super().__init__(message, reason)


class LeadershipLost(CompareFailed):
    """A leader's guarded write refused: the election key no longer has the create revision
    ``term`` this controller won it with, so another controller leads (or none does) and the
    write was not made."""

    code = "leadership_lost"
    DETAILS = ("reason", "term")
    reason = "leadership_lost"
    term = 0

    def __init__(self, message: str, term: int = 0) -> None:
        super().__init__(message, "leadership_lost")
        self.term = term


class Unauthorized(GafferError):
    """An HTTP request without a valid bearer token."""

    code = "unauthorized"


class PreconditionFailed(GafferError):
    """A conditional HTTP write refused: the template's ``ETag`` is not the one the request
    names in ``If-Match`` (it changed since the client read it), or ``If-None-Match: *`` asked
    to create a template that exists. Nothing was changed."""

    code = "precondition_failed"


class UnsupportedMediaType(GafferError):
    """An HTTP request body whose ``Content-Type`` the route does not read (HTTP 415)."""

    code = "unsupported_media_type"


class Throttled(GafferError):
    """Too many failed logins from one peer: it must wait ``retry_after`` seconds."""

    code = "throttled"
    DETAILS = ("retry_after",)

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooLarge(GafferError):
    """An answer (or a request) does not fit in one wire message."""

    code = "too_large"


class KeeperError(GafferError):
    code = "keeper_error"


class KeeperUnavailable(KeeperError):
    code = "keeper_unavailable"


class KeeperBusy(KeeperError):
    code = "keeper_busy"


class KeeperRejected(KeeperError):
    """The keeper answered a request with an error; ``reason`` is the keeper's code."""

    code = "keeper_rejected"
    DETAILS = ("reason",)

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RemoteError(GafferError):
    """An error reported by a peer whose code has no class here; ``code`` and ``details``
    are kept as sent (a newer peer's error passes through an older one unchanged)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = dict(details or {})

    def to_dict(self) -> dict:
        data = super().to_dict()
        if self.details:
            data["details"] = dict(self.details)
        return data


def from_wire(data: dict) -> GafferError:
    """Rebuild the GafferError a peer sent (``to_dict()`` form) as its own class when known,
    with its details; an unknown code gives a RemoteError keeping the code."""
    code = str(data.get("code", "error"))
    message = str(data.get("message", ""))
    details = data.get("details")
    details = details if isinstance(details, dict) else {}
    cls = _by_code().get(code)
    if cls is None:
        return RemoteError(code, message, details)
    exc = cls.__new__(cls)
    GafferError.__init__(exc, message)
    for name in cls.DETAILS:
        setattr(exc, name, details[name] if name in details else getattr(cls, name, None))
    if isinstance(exc, TemplateError):
        exc.problems = [
            Problem(str(p.get("where", "")), str(p.get("field", "")), str(p.get("message", "")))
            for p in data.get("problems", []) if isinstance(p, dict)
        ]
    return exc


def _by_code() -> dict[str, type[GafferError]]:
    found: dict[str, type[GafferError]] = {}
    stack: list[type[GafferError]] = [GafferError]
    while stack:
        cls = stack.pop()
        if cls is not RemoteError:
            found.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return found


class ProtocolError(GafferError):
    """A wire message cannot be accepted (or, when encoding, must not be sent).

    ``reason`` is a stable machine word (the reasons are listed in gaffer.common.protocol) used
    to count and log drops; ``message`` is for humans and names the field path.
    """

    code = "protocol_error"
    DETAILS = ("reason", "kind")

    def __init__(self, reason: str, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.kind = kind
