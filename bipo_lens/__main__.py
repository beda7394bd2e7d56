"""``python -m bipo_lens`` is the ``bipo-lens`` command."""

import sys

from bipo_lens.cli import main

sys.exit(main())
