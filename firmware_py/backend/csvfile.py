"""The front of every HR CSV import (staff, schedules): UTF-8, the header, blank lines, the field count.

Each import then checks its own fields; every bad row is collected so the
whole file is refused with all its problems named at once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence


def csv_rows(
    data: bytes, header: Sequence[str], where: str, problems: list[str], fail: Callable[[str], Exception], hint: str = ""
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, stripped fields)`` for each non-blank row of ``data``.

    A file that is not UTF-8, empty, or has another header raises
    ``fail(message)``; a row with the wrong number of fields is added to
    ``problems`` (with ``hint`` after it) and skipped.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise fail(f"{where}: line {line} is not UTF-8 (byte {exc.start}); save the file as UTF-8 and import it again") from None
    shape = ",".join(header)
    reader = csv.reader(io.StringIO(text, newline=""))
    first = next(reader, None)
    if first is None:
        raise fail(f"{where} is empty; expected a header line {shape}")
    found = [h.strip().lower() for h in first]
    if found != list(header):
        raise fail(f"{where}: the header is {','.join(found)!r}; it must be {shape}")
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            problems.append(f"line {line}: {len(fields)} fields; expected {len(header)} ({shape}){hint}")
            continue
        yield line, [f.strip() for f in fields]
