"""What training does differently inside a Jupyter kernel: progress rewritten in place, plots shown inline.

A kernel's stdout is not a terminal (`isatty()` is False), yet the notebook renders a carriage return as
'rewrite this line', so a progress line can update in place there as in a terminal. Nothing here imports
IPython unless the process already runs in a kernel.
"""

from __future__ import annotations

import sys
from pathlib import Path


def in_notebook() -> bool:
    """True inside a Jupyter (ipykernel) kernel."""
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def live_output() -> bool:
    """Can a progress line be rewritten in place (a terminal or a notebook), or is stdout a log?"""
    return bool(getattr(sys.stdout, "isatty", lambda: False)()) or in_notebook()


def show_plot(path: Path) -> None:
    """Display an image file (the run's loss curves) in the notebook's output, if there is one."""
    if not in_notebook() or not Path(path).is_file():
        return
    from IPython.display import Image, display

    display(Image(filename=str(path)))
