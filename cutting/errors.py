"""The one exception type cutting raises: its message is shown to the caller as the reason."""


class CutError(Exception):
    """The clip cannot be cut (bad source, bad range, ffmpeg failure, failed verification)."""
