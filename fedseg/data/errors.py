"""Errors raised for bad input data. Each message names the file or folder and the fix."""


class DataError(ValueError):
    """A dataset folder or file that fedseg cannot use as it is."""
