"""The one exception type for user mistakes."""

from __future__ import annotations


class TuneError(ValueError):
    """A user mistake, with a message that names the problem and the fix.

    The magic shows it as a one-line ``UsageError``; the Python API raises it as is.
    """
