"""The one exception type users see.

Anything raised as :class:`AutopruneError` is a problem with the user's input or
environment (bad name, missing file, unreachable storage). The CLI prints its
message as one line on stderr and exits with code 2; everything else is a bug
and keeps its traceback.
"""


class AutopruneError(Exception):
    """A user-facing error whose message says what to do about it."""
