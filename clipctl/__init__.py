"""``clipctl``: the command-line client of the clipping proxy (``clipctl --help``)."""
