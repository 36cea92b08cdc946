"""Weekly report: one line per day."""

import datetime

from weekdays import weekday_name


def report_lines(start: datetime.date, counts: list[int]) -> list[str]:
    lines = []
    for offset, count in enumerate(counts):
        day = start + datetime.timedelta(days=offset)
        lines.append(f"{weekday_name(day.weekday())} {day.isoformat()}: {count}")
    return lines
