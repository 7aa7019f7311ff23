"""``python -m resvision.tools`` behaves exactly like the ``resvision`` console script."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
