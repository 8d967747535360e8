"""Errors that carry a message meant for the user (file name + problem), not a library traceback."""


class DeepPuppetsError(Exception):
    """Base class: the message is shown to the user as is."""


class InputError(DeepPuppetsError):
    """A user-supplied file (video, model, config) is missing, unreadable or malformed."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class CliError(Exception):
    """A problem with the command line or its files: printed as one line, exit status 2."""


class ConfigError(DeepPuppetsError):
    """The configuration is invalid; the message names the key."""


class BusyError(DeepPuppetsError):
    """Another live process holds the exclusive lock of the work this job would do (e.g. training a target)."""


class TransferError(DeepPuppetsError):
    """The pair cannot be transferred (no valid frame, models that do not match their tracks, ...)."""
