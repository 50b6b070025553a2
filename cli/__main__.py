"""``python -m runwire``: the same as the ``runwire`` command."""

import sys

from runwire.main import main

sys.exit(main())
