"""`python -m proxy` is the `tagproxy` command."""

import sys

from .cli import main

sys.exit(main())
