"""How Go writes values into the API server's messages, so error texts match the real ones byte for byte.

* ``quote`` is ``strconv.Quote`` (``%q``): the quoting of string values in field errors.
* ``marshal`` is ``encoding/json.Marshal``: compact, map keys sorted, ``<``, ``>`` and ``&`` escaped.
* ``sprint`` is ``fmt.Sprintf("%+v", v)`` of a decoded JSON value (``map[a:1 b:[x y]]``), how a
  strategic merge patch is shown in a 422 about it.
* ``parse_time`` is ``time.Parse`` with the two layouts the API uses (``metav1.Time`` and
  ``metav1.MicroTime``), with Go's error texts (``parsing time "x" as "…": cannot parse "x" as "2006"``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import unicodedata
from decimal import Decimal
from typing import Any

RFC3339 = "2006-01-02T15:04:05Z07:00"
RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"

_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t", "\v": r"\v"}


def _printable(ch: str) -> bool:
    """Go's ``strconv.IsPrint``: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    if ch == " ":
        return True
    return unicodedata.category(ch)[0] in "LMNPS"


def quote(text: str) -> str:
    """``strconv.Quote``: double-quoted, with Go escapes for quotes, backslashes and unprintables."""
    out = ['"']
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif _printable(ch):
            out.append(ch)
        else:
            code = ord(ch)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def time_quote(text: str) -> str:
    """The ``quote`` of Go's time package (bytes outside printable ASCII as ``\\xNN``)."""
    out = ['"']
    for ch in text:
        if ord(ch) >= 0x80 or ch < " ":
            out.extend(f"\\x{b:02x}" for b in ch.encode())
        else:
            if ch in ('"', "\\"):
                out.append("\\")
            out.append(ch)
    out.append('"')
    return "".join(out)


def marshal(value: Any, *, sort_keys: bool = True) -> str:
    """``json.Marshal``: compact JSON with Go's HTML-safe escaping."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _float(value: float) -> str:
    """``%v`` of a float64: shortest digits, ``%e`` form when the exponent is < -4 or >= 6 (``%g``)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    exp10 = len(text) - 1 + exponent
    minus = "-" if sign else ""
    if exp10 < -4 or exp10 >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{minus}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 < 0:
        return f"{minus}0.{'0' * (-exp10 - 1)}{text}"
    if exp10 + 1 >= len(text):
        return f"{minus}{text}{'0' * (exp10 + 1 - len(text))}"
    return f"{minus}{text[: exp10 + 1]}.{text[exp10 + 1 :]}"


def sprint(value: Any) -> str:
    """``fmt.Sprintf("%+v", value)`` of a value decoded from JSON into ``map[string]interface{}``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{sprint(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(sprint(v) for v in value) + "]"
    if isinstance(value, float):
        return _float(value)
    return str(value)


# --- time.Parse -------------------------------------------------------------------------------------


class TimeParseError(ValueError):
    """``time.Parse`` failed; the message is Go's ``*time.ParseError`` text."""


def _error(layout: str, value: str, layout_elem: str, value_elem: str, message: str = "") -> TimeParseError:
    if message:
        return TimeParseError(f"parsing time {time_quote(value)}{message}")
    return TimeParseError(
        f"parsing time {time_quote(value)} as {time_quote(layout)}: cannot parse "
        f"{time_quote(value_elem)} as {time_quote(layout_elem)}"
    )


def _digit(text: str, i: int) -> bool:
    return i < len(text) and "0" <= text[i] <= "9"


def _getnum(text: str, fixed: bool) -> tuple[int, str] | None:
    if not _digit(text, 0):
        return None
    if not _digit(text, 1):
        if fixed:
            return None
        return int(text[0]), text[1:]
    return int(text[:2]), text[2:]


def _days_in(month: int, year: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def parse_time(text: str, micro: bool = False) -> _dt.datetime:
    """``time.Parse(time.RFC3339, text)`` (or ``metav1.RFC3339Micro``), as an aware UTC datetime.

    Fractions beyond microseconds are truncated (Go keeps nanoseconds, but the API writes at most
    microseconds). Raises ``TimeParseError`` with Go's message.
    """
    layout = RFC3339_MICRO if micro else RFC3339
    # (literal prefix, std element) chunks of the layout, as nextStdChunk splits it.
    chunks = [("", "2006"), ("-", "01"), ("-", "02"), ("T", "15"), (":", "04"), (":", "05")]
    if micro:
        chunks.append(("", ".000000"))
    chunks.append(("", "Z07:00"))
    rest = text
    year = month = day = hour = minute = second = micro_s = 0
    offset = 0
    for prefix, std in chunks:
        if not rest.startswith(prefix):
            return _raise(_error(layout, text, prefix, rest))
        rest = rest[len(prefix) :]
        hold = rest
        bad = False
        range_err = ""
        if std == "2006":
            if len(rest) < 4 or not _digit(rest, 0) or not all(_digit(rest, i) for i in range(4)):
                bad = True
            else:
                year, rest = int(rest[:4]), rest[4:]
        elif std in ("01", "02", "04", "05"):
            got = _getnum(rest, True)
            if got is None:
                bad = True
            else:
                num, rest = got
                if std == "01":
                    month = num
                    range_err = "month" if not 1 <= num <= 12 else ""
                elif std == "02":
                    day = num
                elif std == "04":
                    minute = num
                    range_err = "minute" if num >= 60 else ""
                else:
                    second = num
                    range_err = "second" if num >= 60 else ""
                    if not micro and len(rest) >= 2 and rest[0] in ".," and _digit(rest, 1):
                        n = 2
                        while _digit(rest, n):
                            n += 1
                        micro_s = int((rest[1:n] + "000000")[:6])
                        rest = rest[n:]
        elif std == "15":
            got = _getnum(rest, False)
            if got is None:
                bad = True
            else:
                hour, rest = got
                range_err = "hour" if hour >= 24 else ""
        elif std == ".000000":
            if len(rest) < 7 or rest[0] not in ".," or not all(_digit(rest, i) for i in range(1, 7)):
                bad = True
            else:
                micro_s, rest = int(rest[1:7]), rest[7:]
        else:  # Z07:00
            if rest.startswith("Z"):
                rest = rest[1:]
            elif len(rest) < 6 or rest[3] != ":" or rest[0] not in "+-":
                bad = True
            else:
                hh, mm = _getnum(rest[1:3], True), _getnum(rest[4:6], True)
                if hh is None or mm is None:
                    bad = True
                else:
                    if hh[0] > 24:
                        range_err = "time zone offset hour"
                    elif mm[0] > 60:
                        range_err = "time zone offset minute"
                    offset = (hh[0] * 60 + mm[0]) * (1 if rest[0] == "+" else -1)
                    rest = rest[6:]
        if range_err:
            return _raise(_error(layout, text, std, rest, f": {range_err} out of range"))
        if bad:
            return _raise(_error(layout, text, std, hold))
    if rest:
        return _raise(_error(layout, text, "", rest, f": extra text: {time_quote(rest)}"))
    if day < 1 or day > _days_in(month, year):
        return _raise(_error(layout, text, "", rest, ": day out of range"))
    if year < 1:
        # Go accepts year 0; the simulator cannot represent it (and no client means it).
        return _raise(_error(layout, text, "", rest, ": year out of range"))
    moment = _dt.datetime(year, month, day, hour, minute, second, micro_s, tzinfo=_dt.UTC)
    return moment - _dt.timedelta(minutes=offset)


def _raise(err: TimeParseError) -> _dt.datetime:
    raise err


def format_time(moment: _dt.datetime, micro: bool = False) -> str:
    """``metav1.Time``/``MicroTime`` ``MarshalJSON``: UTC, whole seconds (or 6 digits), ``Z``."""
    moment = moment.astimezone(_dt.UTC)
    if micro:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
