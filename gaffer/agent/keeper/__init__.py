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

Nothing is imported here, so the keeper process loads only what it runs.
"""
