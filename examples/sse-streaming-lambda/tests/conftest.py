"""Make the example's ``app`` package importable when pytest runs from the repo root.

In the user's repository the example directory is the root, so ``import app`` works
there without this; here it lives under ``examples/``.
"""

import sys
from pathlib import Path

EXAMPLE_DIR = Path(__file__).resolve().parent.parent

if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))
