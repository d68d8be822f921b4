"""``python -m gaffer.agent.keeper``: the command line every agent since protocol 1 starts.

Agents start it with ``-S`` (no ``site``: its modules and .pth files are about 2 MB of a
process that must stay under 10 MB) and ``PYTHONPATH`` naming the directory that holds
``gaffer`` (``client.keeper_command``); by hand ``python -m gaffer.agent.keeper`` works too.
"""

import sys

from gaffer.agent.keeper.daemon import main

sys.exit(main())
