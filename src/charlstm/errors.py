"""The one exception type a person is meant to read.

Everything that is the user's to fix (a missing file, a bad option, an unknown character) raises
`CharlstmError` with a message that names the thing and what to do. The CLI prints it as one line and exits
with status 2; any other exception is a bug and keeps its traceback.
"""


class CharlstmError(Exception):
    """Bad input or a bad situation the user can act on; the message is the whole story."""

    def _render_traceback_(self) -> list[str]:
        """How IPython (a notebook) shows it: the one line the CLI prints, not a traceback into charlstm."""
        return [f"{type(self).__name__}: {self}"]


class TrainingInterrupted(CharlstmError):
    """Training stopped early on request (SIGINT/SIGTERM) after saving a resumable checkpoint."""


class TrainingDiverged(CharlstmError):
    """The loss became NaN/inf; the last good checkpoint is kept."""
