"""Controller settings: defaults, and where the controller listens.

Without CURVE keys the controller listens on private unix sockets in the runtime directory
(``gaffer.common.endpoints``); with keys, on ``tcp://127.0.0.1:6001`` unless ``bind`` says
otherwise. TCP without keys is refused unless ``insecure``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gaffer.common.endpoints import (
    DEFAULT_KEYED_BIND,
    Endpoint,
    default_control,
    events_for,
    parse_endpoint,
)
from gaffer.common.limits import (
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MAX_PER_TEMPLATE,
    DEFAULT_METRICS_INSTANCES,
    DEFAULT_METRICS_TEMPLATES,
)
from gaffer.controller.eventlog import DEFAULT_BUFFER
from gaffer.controller.http.address import HttpAddress, parse_http
from gaffer.controller.liveness import Liveness
from gaffer.controller.storespec import StoreSpec, default_store


@dataclass(frozen=True)
class ControllerSettings:
    bind: str | None = None
    pub: str | None = None
    data_dir: Path = Path(".gaffer")
    store: StoreSpec | None = None
    """Where the desired state is kept (``--store``); None: SQLite in ``data_dir``."""
    keys: Path | None = None
    local_agents: tuple[tuple[bytes, str], ...] = ()
    """Agent keys authorized in memory (Z85 public key, node), beside ``keys/agents``: the
    embedded agent of ``gaffer start``."""
    insecure: bool = False
    socket_group: str | None = None
    liveness: Liveness = field(default_factory=Liveness)
    node_grace: float = 2.0
    backup_every: float = 0.0
    """Seconds between backups of the store; 0: none (``gaffer-controller`` defaults to 3600)."""
    backup_dir: Path | None = None
    """Where backups go; None: ``<data_dir>/backups``."""
    backup_keep: int = 5
    max_per_template: int = DEFAULT_MAX_PER_TEMPLATE
    """Most instances one template may want (``--max-per-template``)."""
    max_instances: int = DEFAULT_MAX_INSTANCES
    """Most instances all templates together may want (``--max-instances``)."""
    event_buffer: int = DEFAULT_BUFFER
    """Events the controller holds for ``replay`` (``--event-buffer``)."""
    metrics_max_templates: int = DEFAULT_METRICS_TEMPLATES
    """Templates /metrics gives per-template series, the first by name (docs/METRICS.md)."""
    metrics_max_instances: int = DEFAULT_METRICS_INSTANCES
    """Instances /metrics gives per-instance series, the first by id (docs/METRICS.md)."""
    http: str | None = None
    """``HOST:PORT`` of the HTTP API and dashboard (``--http``); None or ``off``: none."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """The HTTP API's certificate and key (``--tls-cert``, ``--tls-key``): both or neither."""
    http_optional: bool = False
    """When ``http`` cannot listen (its port taken), go on without it and say so, instead of
    refusing to start: ``gaffer start``'s default address, which another run may hold."""

    def __post_init__(self) -> None:
        """Refuse a malformed endpoint now, before anything starts."""
        if self.bind:
            parse_endpoint(self.bind, "--bind")
        if self.pub:
            parse_endpoint(self.pub, "--pub")
        if self.http is not None:
            parse_http(self.http)

    @property
    def control(self) -> Endpoint:
        """``bind``, or the default: a private unix socket, or loopback TCP when keyed."""
        if self.bind:
            return parse_endpoint(self.bind, "--bind")
        if self.keys is not None:
            return parse_endpoint(DEFAULT_KEYED_BIND)
        return default_control()

    @property
    def store_spec(self) -> StoreSpec:
        """``store``, or the default: SQLite in ``data_dir``."""
        return self.store if self.store is not None else default_store(self.data_dir)

    @property
    def http_address(self) -> HttpAddress | None:
        """Where the HTTP API listens, or None when it is off."""
        return parse_http(self.http) if self.http is not None else None

    @property
    def events(self) -> Endpoint:
        """Events go to ``pub``, or beside the control endpoint (the next TCP port)."""
        if self.pub:
            return parse_endpoint(self.pub, "--pub")
        return events_for(self.control)
