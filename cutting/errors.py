"""The exceptions cutting raises: the message is shown to the caller as the reason."""


class CutError(Exception):
    """The clip cannot be cut (bad source, bad range, ffmpeg failure, failed verification).

    ``retryable`` tells whether trying again may succeed; a plain ``CutError`` is final.
    """

    retryable = False


class SourceUnavailable(CutError):
    """The source could not be read for a reason that may pass (an I/O error on the NAS)."""

    retryable = True
