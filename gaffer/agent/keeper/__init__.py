"""The fd keeper: holds the agent's pipe ends so managed processes outlive the agent.

A captured instance writes into a pipe whose read end the agent holds. If the agent dies, the
next write gets SIGPIPE (or blocks for ever once the pipe buffer fills). The keeper is one small
process per host, outside the agent, that holds a duplicate of every such pipe end::

    agent ──deposit(key, fds)──▶ keeper          holds duplicates, never reads them
    agent dies (EOF on its link)  keeper          drains out/err into bounded buffers
    agent' ──reclaim()─────────▶ keeper ──fds + buffered bytes──▶ agent'
                                  keeper          holds again, reads nothing

The package, by side of the unix socket::

    framing.py   the frame codec both sides use (header, msgpack body, SCM_RIGHTS)
    packing.py   that msgpack, in plain Python (the msgpack package is not imported here)
    server.py    Keeper: the keeper process's loop (holding, draining, requests)
    poller.py    its epoll: a handler per descriptor (what it used of ``selectors``)
    daemon.py    its entry point: arguments, lock file, socket, ready line (__main__.py)
    client.py    KeeperClient: the agent's asyncio side; spawn_keeper starts a keeper

Nothing is imported here, so the keeper process loads only what it runs. It runs all the time
on every host, so it stays small (under 10 MB RSS; ``bench/idle.py`` measures about 8.3 MB
holding the pipes of 200 instances): agents start it with ``python -S``
(no ``site``: 2 MB) and its side of the package imports only the standard library's modules
that stand on builtins (``os``, ``_socket``, ``_signal``, ``select``, ``struct``, ``fcntl``),
never the rest of gaffer, nor msgpack (with ``datetime``), ``socket``/``signal``/``selectors``
(with ``enum``), ``collections``, ``functools``, ``argparse`` (with ``re``), ``dataclasses``,
``typing`` or ``logging``. Type names are imported only under ``TYPE_CHECKING`` (a local
``False``, as the standard library does it). ``tests/e2e/test_lean_imports.py`` holds it to that.
"""
