"""Exceptions the core raises. Each message names the input at fault and what was expected."""


class WanEgoExoError(Exception):
    """Base class for every error this package raises on purpose."""


class ModelFileError(WanEgoExoError, ValueError):
    """A model or LoRA file is missing, unreadable, or not the model that was expected."""

    def __init__(self, path, problem: str, expected: str | None = None):
        self.path = str(path)
        self.problem = problem
        self.expected = expected
        message = f"{self.path}: {problem}"
        if expected:
            message += f" Expected {expected}."
        super().__init__(message)


class InputError(WanEgoExoError, ValueError):
    """A user-supplied argument (tensor shape, option, video) is invalid."""


class NonFiniteError(WanEgoExoError, ArithmeticError):
    """A run produced NaN or Inf values (latents, decoded video); the message names where and the likely cause."""


class Cancelled(WanEgoExoError):
    """Sampling was stopped by the caller's progress callback."""


class WriteError(WanEgoExoError, OSError):
    """A file could not be written for want of space or permission; the message names it and what to change."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code
