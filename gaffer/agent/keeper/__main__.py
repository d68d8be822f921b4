"""``python -m gaffer.agent.keeper``: the command line every agent since protocol 1 starts."""

import sys

from gaffer.agent.keeper.daemon import main

sys.exit(main())
