"""`crossreview report`: one self-contained HTML file whose plots a real browser draws."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_ledger_figures import build_known

PLOTS = {"intervention_rate", "human_minutes", "cost_vs_interventions", "approval_matrix", "agreement_matrix",
         "agents", "quality"}

PROBE = """
<script>
(function () {
  var out = [];
  document.querySelectorAll('svg.plot').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    var marks = svg.querySelectorAll('.mark');
    var drawn = 0;
    marks.forEach(function (m) { var b = m.getBBox(); if (b.width > 0 && b.height > 0) drawn++; });
    out.push({plot: svg.getAttribute('data-plot'), width: box.width, height: box.height,
              marks: marks.length, drawn: drawn, empty: svg.hasAttribute('data-empty')});
  });
  var pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_args(browser: str) -> list[str]:
    args = [browser, "--headless", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            "--disable-dev-shm-usage", "--user-data-dir=" + os.environ.get("TMPDIR", "/tmp") + f"/cr-chromium-{os.getpid()}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return args


def drawn_plots(html_file: Path) -> dict[str, dict]:
    """Open the report in headless Chromium and read what each plot drew (the DOM after layout)."""
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium to render the report (.ci/run installs Debian's chromium)")
    probe = html_file.with_name(html_file.stem + "-probe.html")
    probe.write_text(html_file.read_text().replace("</body>", PROBE + "</body>"))
    res = subprocess.run([*browser_args(browser), "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"Chromium printed no probe (exit {res.returncode}): {res.stderr[-2000:]}"
    return {p["plot"]: p for p in json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))}


def screenshot(html_file: Path, png: Path, height: int = 4200) -> Path:
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium")
    subprocess.run([*browser_args(browser), f"--window-size=1280,{height}", f"--screenshot={png}", html_file.as_uri()],
                   capture_output=True, text=True, timeout=120)
    return png


def assert_self_contained(text: str) -> None:
    """Opens offline: nothing is fetched from anywhere."""
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text, re.I)
    assert not re.search(r"@import|url\(", text, re.I)
    assert "<link" not in text.lower()


@pytest.mark.slow
def test_report_of_the_hand_built_ledger_is_self_contained_and_drawn(cli, tmp_path):
    build_known(tmp_path / "paper.db")
    res = cli("report", "--ledger", "paper.db", "-o", "out/report.html")
    assert res.returncode == 0, res.stderr
    assert "6 task runs, 3 escalations" in res.stdout
    html_file = tmp_path / "out" / "report.html"
    text = html_file.read_text()
    assert_self_contained(text)
    # Every escalation is listed, linked to its packet, which is in the page.
    for esc in ("e-t2", "e-t4", "e-t6"):
        assert f'href="#packet-{esc}"' in text and f'id="packet-{esc}"' in text
    assert "waiting for a human: `crossreview show e-t6`" in text
    assert "diff of a" in text and "+# by a" in text
    # The headline numbers, benefit beside its cost.
    for figure in ("50.0%", "6.20×", "≥ $0.2520 (1 of 43 unknown)", "0.093", "61.6%"):
        assert figure in text, figure

    plots = drawn_plots(html_file)
    assert set(plots) == PLOTS
    for name, p in plots.items():
        assert not p["empty"], name
        assert p["width"] > 100 and p["height"] > 80, p
        assert p["marks"] > 0 and p["drawn"] == p["marks"], p
    assert plots["intervention_rate"]["marks"] == 2  # two suite runs
    assert plots["cost_vs_interventions"]["marks"] == 2
    assert plots["approval_matrix"]["marks"] == 9 and plots["agreement_matrix"]["marks"] == 9
    assert plots["agents"]["marks"] == 9  # 3 agents x 3 bars
    assert plots["quality"]["marks"] == 4
    png = screenshot(html_file, tmp_path / "report.png")
    assert png.exists() and png.stat().st_size > 50_000


@pytest.mark.slow
def test_report_of_an_empty_ledger_says_so(cli, tmp_path):
    from crossreview.ledger import Ledger

    Ledger(tmp_path / "empty.db")
    res = cli("report", "--ledger", "empty.db", "-o", "r.html")
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "r.html").read_text()
    assert_self_contained(text)
    assert "No escalation" in text and 'data-empty="1"' in text


def test_the_report_shows_every_time_as_the_terminal_does(cli, tmp_path):
    """The escalations table, a decided packet and a suite run's hover text read "2026-03-02 10:01:25 UTC":
    a ledger time written with an offset (a merged ledger, another backend) is converted, never its ISO text
    cut at 16 characters and called UTC with another zone's clock."""
    led = build_known(tmp_path / "paper.db")
    with led.connect() as db:  # the same instants, as a machine five hours west writes them
        db.execute("UPDATE escalations SET created='2026-03-02T05:01:25-05:00', decided='2026-03-02T06:05:00-05:00'"
                   " WHERE id='e-t2'")
        db.execute("UPDATE runs SET started='2026-03-02T05:00:00-05:00' WHERE id='r-alpha'")
    res = cli("report", "--ledger", "paper.db", "-o", "r.html")
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "r.html").read_text()
    table = text[text.index("id='escalations'"):text.index("<h3>Packets</h3>")]
    assert "<td>2026-03-02 10:01:25 UTC</td>" in table and "<td>2026-03-10 10:00:25 UTC</td>" in table, table
    assert "05:01" not in table
    packet = text[text.index('id="packet-e-t2"'):]
    packet = packet[:packet.index("</details>")]
    assert "pick b by paper at 2026-03-02 11:05:00 UTC, " in packet and "06:05" not in packet, packet
    assert "run r-alpha (alpha) 2026-03-02 10:00:00 UTC: " in text and "run r-alpha (alpha) 2026-03-02T05" not in text
