"""Training benchmark: naive BiPO loop vs the fast path (see ``bipo_lens/bench.py``)."""

import sys
import warnings

warnings.filterwarnings("ignore")

from bipo_lens.cli import _quiet_libraries  # noqa: E402
from bipo_lens.bench import main  # noqa: E402

if __name__ == "__main__":
    _quiet_libraries()
    sys.exit(main(sys.argv[1:]))
