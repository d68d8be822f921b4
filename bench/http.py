"""HTTP and listing benchmark (issue 11): listing N instances, beside circus and supervisor.

1. **Listing.** A real ``gaffer-controller`` and ``gaffer-agent`` on loopback (the agent
   pushing its stats every ``--stats-interval`` s) run one template of N ``sleep 3600``, for
   each N of ``--sizes`` (scaled up in turn). Once all N run and every row has a pushed
   sample, ``--calls`` listings, ``--gap-ms`` apart, each timed from send to answer:
   - **gaffer ps (Client)**: ``AsyncClient.call("ps")``, what ``gafferctl ps`` sends, reply
     decoded and checked: what a Python caller waits; the same with the blocking ``Client``;
     and the reply's decoding alone (``wire.reply_body``, in the bench's process);
   - **gaffer ps (controller)**: the same request frame on a bare DEALER, timed until the reply
     frame arrives, not decoded: the controller's side (its work, encoding, the socket);
   - **gaffer ps --fresh**: ``ps`` with ``fresh`` (the agents asked live: before issue 11, every
     ``ps``), fewer calls.
   Beside them, **supervisor** ``getAllProcessInfo`` (XML-RPC on its unix socket) and
   **circus** ``list`` of the watcher (``bench/http_peers.py`` in ``bench/.venv-peers``),
   each a fresh daemon with one program of N ``sleep 3600``, for each N of ``--peer-sizes``
   (10,000 processes under a peer would take minutes to start on a small machine).

2. **HTTP** (``bench/httpcases.py``), on the same controller (``--http`` on loopback, its
   ``admin.token``): ``GET /v1/instances`` at each size (p50/p99, decoded); SSE fan-out of
   ``/v1/events`` to 10 and 100 clients of a burst of ``--burst`` events (events/s each client
   receives; every client must get every event); ``GET /v1/status`` from 10 concurrent
   keep-alive clients for ``--rps-seconds`` (requests/s).

Rows are ``Case``s in ``CASES``: each gets the running cluster and a size and returns its
``Row``s.

Results: printed, and written to the ``http`` section of bench/RESULTS.md (unless
``--no-write``). Every process is stopped by pid, also on Ctrl-C.

    .venv/bin/python bench/http.py [--sizes 200,10000] [--peer-sizes 200,1000] [--quick]
"""

from __future__ import annotations

import sys

if __name__ != "__main__":
    # Every bench script has bench/ first on sys.path (a script's own directory), so an
    # ``import http.client`` there (xmlrpc, peers.py, aiohttp) finds this file before the
    # standard library's package. Imported under that name, this file loads the real package
    # and puts it in its place, so the importer gets what it asked for.
    import importlib.util
    import sysconfig

    _where = sysconfig.get_path("stdlib") + "/http"
    _spec = importlib.util.spec_from_file_location(
        __name__, _where + "/__init__.py", submodule_search_locations=[_where]
    )
    assert _spec is not None and _spec.loader is not None
    _real = importlib.util.module_from_spec(_spec)
    sys.modules[__name__] = _real
    _spec.loader.exec_module(_real)
else:
    from httpbench import main

    sys.exit(main())
