"""One-line notices to the user (legacy keys, fallbacks, choices), printed by rank zero only."""

import sys

from lightning.pytorch.utilities import rank_zero_only


@rank_zero_only
def notice(line):
    print(line, file=sys.stderr, flush=True)
