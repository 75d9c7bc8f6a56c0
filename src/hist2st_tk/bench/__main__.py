"""``python -m hist2st_tk.bench ...`` is ``hist2st bench ...``."""

from __future__ import annotations

import sys

from ..__main__ import main

sys.exit(main(["bench", *sys.argv[1:]]))
