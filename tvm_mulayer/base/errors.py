"""The one exception type users see: a message that says what was wrong and what to do."""

import sys


class MulayerError(Exception):
    """Bad input or an unsatisfiable request; the CLI prints it as one line and exits 2."""


def reported(program: str, run, *args) -> int:
    """`run(*args)`'s exit status (None: 0); a MulayerError it raises becomes one line on stderr,
    "PROGRAM: error: MESSAGE", and status 2 (what argparse gives bad arguments), not a traceback.
    The `mulayer` command and the scripts end through this."""
    try:
        return run(*args) or 0
    except MulayerError as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return 2
