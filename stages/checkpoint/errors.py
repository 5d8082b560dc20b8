"""The one error type of checkpoint handling, and its messages for a file in the wrong loader.

Every message names the file, what was expected, what the file actually is and which loader
takes it, so a user who picked the wrong file in a dropdown knows what to do next. The texts per
kind of file live in kinds.py.
"""
from .kinds import file_kind


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, or is not what the loader that opened it needs."""


def _loader_name(want):
    return file_kind(want).loader_name or want + " loader"


def wrong_file(source_name, what_it_is, kind, want):
    """`source_name` holds `what_it_is` (kind `kind`), but the loader for `want` was used."""
    message = f"{source_name} is {what_it_is}, but the {_loader_name(want)} needs {file_kind(want).wanted_file or want}."
    taken_by = file_kind(kind).taken_by()
    if taken_by:
        message += f" Load it with {taken_by} instead."
    else:
        message += " It matches no known Stable Cascade layout; check that the download finished and is the file you meant."
    return CheckpointError(message)


def missing_part(source_name, what_it_is, kind, want):
    """A bundled file was opened for a network it does not contain."""
    wanted = file_kind(want).network_name or want
    message = (
        f"{source_name} is {what_it_is}; it holds no {wanted}. The "
        f"{_loader_name(want)} needs {file_kind(want).wanted_file or 'a ' + wanted + ' file'}."
    )
    taken_by = file_kind(kind).taken_by()
    if taken_by:
        message += f" Load it with {taken_by} instead."
    return CheckpointError(message)
