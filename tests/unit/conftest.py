"""Make the repository root importable so tests can ``from scripts import replay``.

Plain ``pytest`` (unlike ``python -m pytest``) does not put the working directory on sys.path.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = str(Path(__file__).resolve().parents[2])
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
