"""`python -m charlstm.cli ...`: the same as the `charlstm` command."""

import sys

from charlstm.cli import main

sys.exit(main())
