"""``python -m featbank.cli``: the same as the ``featbank`` console script."""

import sys

from featbank.cli import main

sys.exit(main())
