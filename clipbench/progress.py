"""Progress bars that suit where the output goes.

On a terminal this is tqdm's bar. Otherwise (log files, CI, sweep workers) redrawing with carriage
returns would pile up into one long line, so the bar prints one plain line at each quarter of the work.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm as terminal_tqdm
from tqdm.std import tqdm as std_tqdm

LOG_STEPS = 4


class _Lines:
    """Passes on whole lines only: tqdm's own bare carriage returns and newlines are dropped."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        if text.strip():
            self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


class LoggedProgress(std_tqdm):
    """A tqdm that writes ``desc: n/total unit (p%), elapsed`` lines at a few steps instead of a bar."""

    def __init__(self, *args, **kwargs):
        kwargs.update(mininterval=0, miniters=1, file=_Lines(kwargs.get("file") or sys.stderr))
        self._logged_step = 0
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        if self.total:
            step = int(LOG_STEPS * self.n // self.total)
            if step <= self._logged_step:
                return True
            self._logged_step = step
        elif not getattr(self, "_closing", False):
            return True
        elapsed = self.format_interval(self.format_dict["elapsed"])
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        of_total = f"/{self.total}" if self.total else ""
        self.fp.write(f"{self.desc or 'progress'}: {self.n}{of_total} {self.unit}{share}, {elapsed} elapsed\n")
        self.fp.flush()
        return True

    def close(self):
        if not self.disable:
            self._closing = True
        super().close()


def tqdm(*args, **kwargs):
    """Drop-in for ``tqdm.auto.tqdm``: a bar on a terminal, a few logged steps otherwise."""
    stream = kwargs.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return terminal_tqdm(*args, **kwargs) if isatty and isatty() else LoggedProgress(*args, **kwargs)
