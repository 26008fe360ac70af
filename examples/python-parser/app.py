"""A selfmon log parser written in Python (componentize-py), world `parser` of selfmon:plugin@0.1.0.

Reads lines like

    2026-11-27 10:00:01 [ERROR] bot: reply failed
    2026-11-27 10:00:01.250 [warn] api.http: slow answer

into level, timestamp, service and message. A line that starts with whitespace continues the record before it
(a traceback), a blank line is skipped, anything else is invalid (the host keeps it raw).

Config (`[log_source.parser_config]`): `utc_offset` ("+03:00"), the zone of the times, which carry none.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Level,
    LogRecord,
    ParseOutcome_Continuation,
    ParseOutcome_Invalid,
    ParseOutcome_Parsed,
    ParseOutcome_Skip,
    ParseRequest,
    PluginInfo,
    Setting,
    ValueKind,
)

VERSION = "0.1.0"

LINE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"  # time
    r"\s+\[([A-Za-z]+)\]"  # [LEVEL]
    r"\s+([^\s:]+):"  # service:
    r"\s?(.*)$"  # message
)
OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")

LEVELS = {
    "trace": Level.TRACE, "finest": Level.TRACE,
    "debug": Level.DEBUG, "dbg": Level.DEBUG, "fine": Level.DEBUG,
    "info": Level.INFO, "information": Level.INFO, "notice": Level.INFO, "log": Level.INFO,
    "warn": Level.WARNING, "warning": Level.WARNING,
    "error": Level.ERROR, "err": Level.ERROR, "exception": Level.ERROR,
    "critical": Level.CRITICAL, "crit": Level.CRITICAL, "fatal": Level.CRITICAL, "panic": Level.CRITICAL,
    "emerg": Level.CRITICAL, "alert": Level.CRITICAL,
    "security": Level.SECURITY,
    "audit": Level.AUDIT,
}


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm, as the Rust SDK uses)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def offset_seconds(text: str):
    """`+03:00`, `-0530`, `Z` → seconds east of UTC; None when not an offset."""
    text = text.strip()
    if text in ("", "Z", "z"):
        return 0
    m = OFFSET.match(text)
    if not m or int(m.group(2)) > 23 or int(m.group(3)) > 59:
        return None
    seconds = int(m.group(2)) * 3600 + int(m.group(3)) * 60
    return -seconds if m.group(1) == "-" else seconds


def config_offset(config) -> int:
    """The configured `utc_offset` in seconds; raises ValueError naming the key."""
    for key, value in config:
        if key == "utc_offset":
            text = json.loads(value)
            offset = offset_seconds(text) if isinstance(text, str) else None
            if offset is None:
                raise ValueError(f"`utc_offset`: expected an offset such as \"+03:00\", got {value}")
            return offset
    return 0


def parse_line(line: str, offset: int):
    if not line.strip():
        return ParseOutcome_Skip()
    m = LINE.match(line)
    if m is None:
        if line[:1] in (" ", "\t"):
            return ParseOutcome_Continuation()
        return ParseOutcome_Invalid("not `YYYY-MM-DD HH:MM:SS [LEVEL] service: message`")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second <= 60):
        return ParseOutcome_Invalid(f"not a valid time: {line[:19]}")
    fraction = m.group(7) or ""
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    level_name = m.group(8)
    level = LEVELS.get(level_name.lower())
    fields = []
    if level is None:
        level = Level.INFO
        fields.append(("level", json.dumps(level_name)))
    return ParseOutcome_Parsed(
        LogRecord(
            timestamp_ns=seconds * 1_000_000_000 + nanos,
            level=level,
            service=m.group(9),
            logger=None,
            message=m.group(10),
            trace_id=None,
            span_id=None,
            correlation_id=None,
            user_id=None,
            fields=fields,
        )
    )


class LogParser(exports.LogParser):
    def info(self) -> PluginInfo:
        return PluginInfo(
            name="bracketed",
            version=VERSION,
            description="`YYYY-MM-DD HH:MM:SS [LEVEL] service: message` lines (a Python plugin)",
            config=[
                Setting(
                    name="utc_offset",
                    description="The UTC offset of the times in the log, which carry no zone (\"+03:00\").",
                    kind=ValueKind.TEXT,
                    default=json.dumps("+00:00"),
                    required=False,
                    env=None,
                )
            ],
            secrets=[],
            default_target=None,
        )

    def validate(self, config) -> None:
        try:
            config_offset(config)
        except ValueError as error:
            raise Err(str(error))

    def parse(self, request: ParseRequest):
        try:
            offset = config_offset(request.config)
        except ValueError as error:
            # validate() already refused this; answer every line anyway, one outcome per line.
            host.log(Level.WARNING, str(error), [("source", request.source)])
            return [ParseOutcome_Invalid(str(error)) for _ in request.lines]
        return [parse_line(line, offset) for line in request.lines]
