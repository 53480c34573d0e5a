"""``python -m crossent``: the command line, same as the ``crossent`` script."""

from crossent.cli import main

raise SystemExit(main())
