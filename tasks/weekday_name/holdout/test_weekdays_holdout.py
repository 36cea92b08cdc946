import datetime

from weekdays import weekday_name

# 2024-01-01 was a Monday.
WEEK = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def test_agrees_with_the_calendar():
    start = datetime.date(2024, 1, 1)
    for offset in range(28):
        date = start + datetime.timedelta(days=offset)
        assert weekday_name(date.weekday()) == WEEK[offset % 7]


def test_report_uses_it():
    from report import report_lines

    lines = report_lines(datetime.date(2024, 3, 4), [3, 1])
    assert lines == ["Monday 2024-03-04: 3", "Tuesday 2024-03-05: 1"]
