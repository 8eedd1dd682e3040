"""The user's mistakes: one base class, so every command catches one type and exits 1 with one line.

Each subclass names where the problem was found. Messages are one line that names the file, flag or
setting at fault and what to do about it. `UserError` is a ValueError, so code that caught the older
ValueErrors keeps working.
"""


class UserError(ValueError):
  """A problem the user can fix (bad input, flag, config or workdir); the message is one line."""


class AudioError(UserError):
  """A file cannot be used as speech audio."""


class CorpusError(UserError):
  """A corpus or feature folder is missing, empty or inconsistent."""


class ConfigError(UserError):
  """A config field or preset is invalid."""


class TrainingError(UserError):
  """A run cannot go on (diverged, bad workdir); the message says why and what is kept."""


class ConversionError(UserError):
  """Conversion cannot run (missing file, bad audio, wrong checkpoint)."""


class PortError(UserError):
  """A state dict does not fit the model; the message names the offending keys."""


class CheckpointError(UserError):
  """A checkpoint, workdir or model directory is missing or does not hold what was asked for."""
