"""The one error type of the device layer."""


class DeviceError(RuntimeError, ValueError):
    """The requested device or its options cannot be used; the message names the fix."""
