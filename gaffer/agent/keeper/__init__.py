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
    server.py    Keeper: the keeper process's loop (holding, draining, requests)
    daemon.py    its entry point: arguments, lock file, socket, ready line (__main__.py)
    client.py    KeeperClient: the agent's asyncio side; spawn_keeper starts a keeper

Nothing is imported here, so the keeper process loads only what it runs. It runs all the time
on every host, so it stays small (under 10 MB PSS): its side of the package imports the
standard library's lightest parts and msgpack, never the rest of gaffer, and none of
``dataclasses``, ``typing`` or ``logging`` (with what they pull in, about 3 MB of a 9 MB
process). Type names are imported only under ``TYPE_CHECKING`` (a local ``False``, as the
standard library does it). ``tests/e2e/test_lean_imports.py`` holds it to that.
"""
