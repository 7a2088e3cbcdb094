"""User-facing errors: the CLI prints their message (no traceback) and exits non-zero."""


class RadioError(Exception):
    """A problem the user can fix: the message names the field/file/key and what would be valid."""


class SpecError(RadioError):
    """The spec file or a command-line override is invalid."""


class DataError(RadioError):
    """A data source is missing, empty, or too corrupt to train on."""


class CheckpointError(RadioError):
    """A checkpoint file is missing, corrupt, unsafe, or does not match the model."""
