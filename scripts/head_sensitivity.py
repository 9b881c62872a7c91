"""Head sensitivity (FALIP's analysis); the same as the ``clipbench-heads`` command (clipbench/heads.py)."""

import sys

from clipbench.heads import main

if __name__ == "__main__":
    sys.exit(main())
