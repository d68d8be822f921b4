"""``python -m gaffer.cli``: the ``gaffer`` command."""

from gaffer.cli.start import main

main()
