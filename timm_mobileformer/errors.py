"""The one exception type for expected failures: bad input, damaged or unsafe files, unreachable weights,
outputs that can't be written. Its message is one line that says what happened and what to do; the command
line prints it as `timm-mobileformer <command>: error: <message>` and exits non-zero, without a traceback."""

__all__ = ['MobileFormerError', 'CheckpointError', 'one_line']


class MobileFormerError(Exception):
    """An expected failure, said in one line that tells the user what to do."""


class CheckpointError(MobileFormerError, ValueError):
    """A checkpoint that can't be used: missing, damaged, unsafe to unpickle, or not this model's weights.

    Also a ValueError, the type timm's loaders and filter functions raise for bad weights."""


def one_line(text: object) -> str:
    """`text` (an exception, a message) as one line: every run of whitespace, newlines included, one space."""
    return ' '.join(str(text).split())
