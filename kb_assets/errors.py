"""The one error type for bad input: it names the file, the record and the fix."""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input the user must fix; raised before anything is written.

    str(err) reads ``<file>: <record>: <problem>. Fix: <fix>`` so a log line alone tells the user what to do.
    """

    def __init__(self, file: str | os.PathLike | None, record: str | None, problem: str, fix: str):
        self.file = str(file) if file is not None else None
        self.record = record
        self.problem = problem
        self.fix = fix
        where = ": ".join(part for part in (self.file, record) if part)
        super().__init__(f"{where + ': ' if where else ''}{problem}. Fix: {fix}")
