"""``python -m prompttap``: the same as the ``prompttap`` command."""

import sys

from prompttap.cli import main

sys.exit(main())
