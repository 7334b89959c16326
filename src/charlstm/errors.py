"""The one exception type a person is meant to read.

Everything that is the user's to fix (a missing file, a bad option, an unknown character) raises
`CharlstmError` with a message that names the thing and what to do. The CLI prints it as one line and exits
with status 2; any other exception is a bug and keeps its traceback.
"""


class CharlstmError(Exception):
    """Bad input or a bad situation the user can act on; the message is the whole story.

    Args:
        message: what is wrong and what to do, in one line (what the CLI prints).
        field: the setting or input it concerns, by its Python name ("top_p", "prime", "logit_bias"), or
            None. The server answers such an error with a 422 whose `loc` names that field (mapped onto the
            request's own names), so nothing has to read the message to find it.
    """

    def __init__(self, message: str = "", field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        """Pickled with its field (and a subclass's own attributes), not rebuilt from the message alone."""
        return _rebuild, (type(self), self.args, dict(self.__dict__))

    def _render_traceback_(self) -> list[str]:
        """How IPython (a notebook) shows it: the one line the CLI prints, not a traceback into charlstm."""
        return [f"{type(self).__name__}: {self}"]


class UnknownCharacters(CharlstmError):
    """Text with characters outside the model's vocabulary, under the "error" policy.

    `summary` names the characters; the message adds the CLI's way on (`--unknown skip`), and the server adds
    its own (`"unknown": "skip"`) to the summary instead.
    """

    def __init__(self, summary: str, field: str | None = None) -> None:
        super().__init__(f"{summary}; use --unknown skip (or replace) to go on", field)
        self.summary = summary


class TrainingInterrupted(CharlstmError):
    """Training stopped early on request (SIGINT/SIGTERM) after saving a resumable checkpoint."""


class TrainingDiverged(CharlstmError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def _rebuild(cls: type[CharlstmError], args: tuple[object, ...], state: dict[str, object]) -> CharlstmError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc
