"""Errors that describe a problem with the user's input and say what was expected.

Entry points print these as one clear message instead of a stack trace; anything else is a bug.
"""


class SamtuneError(Exception):
    """Base class: a problem the user can fix (a config key, a file, a checkpoint)."""


class ConfigError(SamtuneError):
    """A config value or combination that cannot work."""


class DataError(SamtuneError):
    """A dataset folder, image or mask that does not match the expected layout."""


class CheckpointError(SamtuneError):
    """A checkpoint that is missing, corrupt, or made for another model."""


class PromptError(SamtuneError):
    """A point or box prompt that is malformed or lies outside its image."""


class DownloadError(SamtuneError):
    """A download that failed, was truncated, or does not match its checksum."""


class TrackingError(SamtuneError):
    """The tracking store (logger.tracking_uri) cannot be reached or used."""


class OutOfMemory(SamtuneError):
    """The device or host ran out of memory; the message names the settings to lower."""


class TrainingDiverged(SamtuneError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(SamtuneError):
    """Training stopped on a signal (preemption, time limit) after saving a checkpoint to resume from."""


def first_line(err: BaseException) -> str:
    """An exception's message as one line (its type when it has no message), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
