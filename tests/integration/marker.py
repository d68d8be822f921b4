"""A small worker for start-order tests: it records when it starts (and listens, finishes or
is stopped) as files ``<dir>/<template>.<ordinal>.<event>`` holding ``time.time()``.

    marker.py DIR job SECONDS      run SECONDS, record ``done``, exit 0 (a migration)
    marker.py DIR serve SECONDS    wait SECONDS, listen on $PORT, record ``listen``, then wait
    marker.py DIR wait             wait for TERM

On TERM it records ``stop`` and exits 0. The waits are this process's own work, never the test's.
"""

import os
import signal
import socket
import sys
import time

OUT = sys.argv[1]
ME = f"{os.environ['GAFFER_TEMPLATE']}.{os.environ['GAFFER_INSTANCE']}"


def mark(event: str) -> None:
    path = os.path.join(OUT, f"{ME}.{event}")
    with open(path + ".tmp", "w") as out:
        out.write(repr(time.time()))
    os.replace(path + ".tmp", path)


def on_term(*_: object) -> None:
    mark("stop")
    sys.exit(0)


signal.signal(signal.SIGTERM, on_term)  # before the start mark: a test that saw it may stop us
mark("start")
mode = sys.argv[2]
if mode == "job":
    time.sleep(float(sys.argv[3]))  # the job's own work (a migration taking SECONDS), not a wait of the test
    mark("done")
    sys.exit(0)
if mode == "serve":
    time.sleep(float(sys.argv[3]))  # a slow starter's own start-up, not a wait of the test
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(os.environ["PORT"])))
    listener.listen()
    mark("listen")
while True:
    signal.pause()
