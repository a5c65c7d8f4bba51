"""The one exception type for expected failures: bad input, damaged or unsafe files, unreachable weights,
outputs that can't be written. Its message is one line that says what happened and what to do; the command
line prints it as `timm-mobileformer <command>: error: <message>` and exits non-zero, without a traceback."""

__all__ = ['MobileFormerError']


class MobileFormerError(Exception):
    """An expected failure, said in one line that tells the user what to do."""
