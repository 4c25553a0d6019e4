"""How the CLI prints: data literally, never as terminal markup; tables that read at 80 columns.

Whatever the CLI prints that came from outside — host names, labels, file names, error
messages, a command's output — goes through here. It is never parsed as rich markup (a
host named ``[/]`` or ``[bold red]x`` prints as written), and terminal control codes
(ESC sequences: CSI, OSC; the other C0 and C1 controls; bidi overrides; bytes that are
not UTF-8) are shown escaped, ``\\x1b``, never sent to the terminal.

Tables fold long cells instead of cutting them; a column of names people type
(``files.clean_temp``, ``AUTOFIX_NOTEBOOK_SIZE``) is never wrapped or truncated.

>>> clean("ok\\x1b]0;pwned\\x07 [bold]")
'ok\\\\x1b]0;pwned\\\\x07 [bold]'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Column, Table
from rich.text import Text

from autofix.cli._app import err, out

# C0 but tab and newline, DEL, C1, bidi controls, lone surrogates (undecodable bytes).
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_UNSAFE_ONE_LINE = re.compile(f"[\t\n{_UNSAFE.pattern[1:-1]}]")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: object, *, multiline: bool = False) -> str:
    """``value`` as text safe for a terminal: control codes shown escaped.

    ``multiline`` keeps newlines and tabs (a command's output); otherwise they are
    escaped too, so one value is one line.
    """
    text = value if isinstance(value, str) else str(value)
    return (_UNSAFE if multiline else _UNSAFE_ONE_LINE).sub(_escape, text)


def text(value: object, style: str = "", *, multiline: bool = False) -> Text:
    """A rich Text of ``value``, printed literally (never parsed as markup)."""
    return Text(clean(value, multiline=multiline), style=style)


Part = object | tuple[object, str]


def line(*parts: Part) -> Text:
    """Literal parts in one line; a ``(value, style)`` pair is a styled part.

    >>> line("fix ", ("[red]x", "bold")).plain
    'fix [red]x'
    """
    out_text = Text()
    for part in parts:
        if isinstance(part, tuple):
            value, style = part
            out_text.append(clean(value), style=style)
        else:
            out_text.append(clean(part))
    return out_text


def say(*parts: Part, console: Console | None = None) -> None:
    """Print one line of literal parts (to stdout unless ``console`` says otherwise)."""
    (console or out).print(line(*parts), soft_wrap=True)


def block(label: str, value: object, *, console: Console | None = None) -> None:
    """Print ``label: value`` where value may span lines (output of a command)."""
    (console or out).print(
        Text(f"{label}: ") + text(value, multiline=True), soft_wrap=True, highlight=False
    )


def error(message: object) -> None:
    """The one line a failed command prints on stderr."""
    err.print(Text(f"autofix: error: {clean(message)}"), soft_wrap=True)


@dataclass(frozen=True)
class Col:
    """A table column.

    ``key``: names people type — never wrapped or cut. ``optional``: left out (and said
    so under the table) when the terminal is too narrow for every column.
    """

    header: str
    key: bool = False
    justify: Literal["left", "right"] = "left"
    optional: bool = False


class DataTable(Table):
    """A rich Table whose cells are literal text; key columns as wide as their widest name."""

    def __init__(
        self, *columns: str | Col, title: str | None = None, box: box.Box | None = box.SIMPLE_HEAD
    ) -> None:
        super().__init__(title=clean(title) if title else None, box=box)
        self._spec = [Col(c) if isinstance(c, str) else c for c in columns]
        self._keys: list[int] = []
        for index, column in enumerate(self._spec):
            # A header's words are never split; cells fold.
            words = max((len(word) for word in column.header.split()), default=1)
            if column.key:
                self._keys.append(index)
            self.add_column(
                column.header,
                justify=column.justify,
                no_wrap=column.key,
                overflow="ellipsis" if column.key else "fold",
                min_width=words,
            )

    def add_row(self, *cells: Any, **kwargs: Any) -> None:
        """Add a row; each cell is shown literally (a Text keeps its styles, text escaped)."""
        rendered = [
            Text(clean(c.plain), style=c.style) if isinstance(c, Text) else text(c) for c in cells
        ]
        for index in self._keys:
            if index < len(rendered):
                width = rendered[index].cell_len
                column = self.columns[index]
                column.min_width = max(column.min_width or 0, width)
        super().add_row(*rendered, **kwargs)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = [self._natural(console, options, column) for column in self.columns]
        keep = list(range(len(self.columns)))
        optional = [i for i, c in enumerate(self._spec) if c.optional]
        # A narrow terminal: optional columns go first, then the long cells fold, each
        # long column getting an equal share of what the short ones leave.
        while optional and self._need(keep, natural) > options.max_width:
            keep.remove(optional.pop())
        if len(keep) == len(self.columns) and self._need(keep, natural) <= options.max_width:
            yield from super().__rich_console__(console, options)
            return
        widths = self._share(keep, natural, options.max_width)
        narrow = Table(title=self.title, box=self.box)
        for index in keep:
            column = self.columns[index]
            narrow.add_column(
                column.header,
                justify=column.justify,
                no_wrap=column.no_wrap and widths is not None,
                overflow="fold" if widths is None else column.overflow,
                width=None if widths is None else widths[index],
            )
        for row in zip(*[list(self.columns[i].cells) for i in keep], strict=True):
            narrow.add_row(*row)
        hidden = [self._spec[i].header for i in range(len(self._spec)) if i not in keep]
        if hidden:
            narrow.caption = (
                f"not shown at this width: {', '.join(hidden)} (widen the terminal, or --json)"
            )
        yield narrow

    @staticmethod
    def _natural(console: Console, options: ConsoleOptions, column: Column) -> int:
        cells = [column.header, *column.cells]
        return max(Measurement.get(console, options, cell).maximum for cell in cells)

    @staticmethod
    def _extra(count: int) -> int:
        # A space either side of each cell, a separator between columns, an edge each end.
        return 2 * count + (count - 1) + 2

    def _need(self, keep: list[int], natural: list[int]) -> int:
        return sum(natural[i] for i in keep) + self._extra(len(keep))

    def _share(self, keep: list[int], natural: list[int], width: int) -> dict[int, int] | None:
        """Widths that fit ``width``: keys and short columns whole, long ones an equal share.

        None when even the names do not fit side by side (then everything folds).
        """
        widths = {i: natural[i] for i in keep if self.columns[i].no_wrap}
        left = width - self._extra(len(keep)) - sum(widths.values())
        flexible = sorted((i for i in keep if i not in widths), key=lambda i: natural[i])
        while flexible and natural[flexible[0]] <= left // len(flexible):
            index = flexible.pop(0)
            widths[index] = natural[index]
            left -= natural[index]
        least = {i: self.columns[i].min_width or 1 for i in flexible}
        if flexible and left < sum(least.values()):
            return None
        for index in flexible:
            widths[index] = max(least[index], left // len(flexible))
        return widths


def table(*columns: str | Col, title: str | None = None) -> DataTable:
    """A new table of literal cells (see ``DataTable``)."""
    return DataTable(*columns, title=title)


def show(renderable: Any, *, console: Console | None = None) -> None:
    """Print a table (or any renderable built from this module's pieces)."""
    (console or out).print(renderable)
