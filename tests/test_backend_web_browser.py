"""The backend's web page in a real headless browser: Debian's chromium, driven by selenium through Debian's
chromedriver, against `kaoclock backend serve` on PostgreSQL with a month of real signed punches and a reader's
real telemetry: the page loads, shows the month and the fleet, and an HR login + correction round-trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_support import seed_book

from firmware_py.backend.db import Database
from firmware_py.backend.fleet import FleetRecorder
from firmware_py.backend.users import add_user
from firmware_py.cli.main import main
from firmware_py.mqtt.status import encode, status_payload
from firmware_py.telemetry.collector import TelemetryCollector

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed (device/bootstrap.sh --dev installs them)",
)


@pytest.fixture
def server(tmp_path: Path, pg_url: str) -> Iterator[str]:
    db = seed_book(Database.open(pg_url), tmp_path)
    add_user(db, "hr1", PASSWORD)
    recorder = FleetRecorder(db)
    collector = TelemetryCollector(site="site-a", device="gate-1", data_dir=tmp_path, providers={"gallery": lambda: {"version": 3, "size": 2}})
    t0 = time.time() - 3600
    recorder.handle("kaoclock/v1/site-a/gate-1/status", encode(status_payload("site-a", "gate-1", "online", "connected", protocol="5")))
    for i in range(12):  # an hour of telemetry, every 5 minutes
        snap = collector.snapshot(now=t0 + i * 300)
        snap["cpu"] = {**snap["cpu"], "temp_c": 50.0 + i}  # a warming reader: the plot must rise
        recorder.handle("kaoclock/v1/site-a/gate-1/telemetry", json.dumps(snap).encode())
    db.close()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_py", "backend", "serve", "--db", pg_url, "--home", str(tmp_path / "home"), "--port", "0", "--corrections"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        yield line.split()[1].rstrip("/")
        proc.terminate()  # what systemd's stop sends: a clean exit
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=Service(str(CHROMEDRIVER)))
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def test_book_fleet_and_an_hr_correction_in_chromium(server: str, browser: object, pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    drv: WebDriver = browser  # type: ignore[assignment]

    def text(css: str) -> str:
        return str(drv.find_element(By.CSS_SELECTOR, css).text)

    def click_and_load(element: WebElement) -> None:
        # A click that navigates returns before the next page is there: wait until the old page is gone.
        old = drv.find_element(By.TAG_NAME, "html")
        element.click()
        WebDriverWait(drv, 20).until(expected_conditions.staleness_of(old))

    drv.get(server + "/")  # the newest month with punches
    assert "Attendance book 2026-12" in text("h1")
    rows = {r.find_element(By.CSS_SELECTOR, "td").text: r for r in drv.find_elements(By.CSS_SELECTOR, "#book tr")[1:]}
    assert sorted(rows) == ["alice", "bob", "carol"]
    alice_cells = rows["alice"].find_elements(By.CSS_SELECTOR, "td")
    assert alice_cells[1].text == "9.5" and "anomaly" in alice_cells[1].get_attribute("class")  # 12-01: 570 min, a double IN
    assert alice_cells[2].get_attribute("title") == "in_without_out"  # 12-02: the IN without OUT, highlighted
    assert "anomaly" not in (rows["carol"].find_elements(By.CSS_SELECTOR, "td")[1].get_attribute("class") or "")
    # the fleet with the reader's alerts, and its telemetry plotted
    drv.get(server + "/fleet")
    fleet = {r.get_attribute("data-reader"): r.text for r in drv.find_elements(By.CSS_SELECTOR, "#fleet tr[data-reader]")}
    assert sorted(fleet) == ["site-a/gate-1", "site-a/gate-2", "site-b/gate-9"]
    assert "online" in fleet["site-a/gate-1"] and "v3, 2 people" in fleet["site-a/gate-1"] and "never_seen" in fleet["site-b/gate-9"]
    click_and_load(drv.find_element(By.LINK_TEXT, "site-a/gate-1"))
    assert "12 telemetry messages" in text("body")
    temp = drv.find_element(By.CSS_SELECTOR, "svg[aria-label^='CPU temperature'] polyline").get_attribute("points") or ""
    ys = [float(p.split(",")[1]) for p in temp.split()]
    assert len(ys) == 12 and ys[0] > ys[-1]  # 50 -> 61 degrees: the line rises (SVG y grows downwards)
    # a month without punches: a clear message
    drv.get(server + "/book?month=2027-01")
    assert text("h1") == "404" and "no punches in 2027-01" in text("#error")
    # HR logs in and corrects alice's missing OUT of 12-02 from her month's page
    drv.get(server + "/person/alice?month=2026-12")
    assert not drv.find_elements(By.NAME, "reason")  # not logged in: no correction forms
    click_and_load(drv.find_element(By.LINK_TEXT, "Log in"))
    drv.find_element(By.NAME, "name").send_keys("hr1")
    drv.find_element(By.NAME, "password").send_keys(PASSWORD)
    click_and_load(drv.find_element(By.ID, "login"))
    assert text("#user") == "HR: hr1" and "alice" in text("h1")
    missing = drv.find_element(By.XPATH, "//table[@id='anomalies']//tr[td[2]='in_without_out']")
    anomaly_id = missing.get_attribute("data-id")
    Select(missing.find_element(By.NAME, "action")).select_by_visible_text("add_out")
    missing.find_element(By.NAME, "value").send_keys("17:30")
    click_and_load(missing.find_element(By.TAG_NAME, "button"))  # without a reason: refused, nothing stored
    assert text("h1") == "400" and "a correction needs a reason" in text("#error")
    drv.back()
    drv.refresh()
    missing = drv.find_element(By.XPATH, f"//table[@id='anomalies']//tr[@data-id='{anomaly_id}']")
    Select(missing.find_element(By.NAME, "action")).select_by_visible_text("add_out")
    missing.find_element(By.NAME, "value").send_keys("17:30")
    missing.find_element(By.NAME, "reason").send_keys("forgot to punch out")
    click_and_load(missing.find_element(By.TAG_NAME, "button"))
    assert f"{anomaly_id}: corrected (add_out)" in text(".msg")
    day2 = drv.find_element(By.XPATH, "//table[@id='days']//tr[td[1]='2026-12-02']").find_elements(By.TAG_NAME, "td")
    assert [day2[3].text, day2[4].text, day2[9].text] == ["17:30", "8.5", "1"]  # last OUT, worked hours, corrected
    assert text(f"tr[data-id='{anomaly_id}'] .status") == "corrected"
    # the same correction in the CLI's list, by the logged-in user, with the reason
    assert main(["backend", "anomalies", "list", "--month", "2026-12", "--all", "--json", "--db", pg_url]) == 0
    listed = {a["id"]: a for a in json.loads(capsys.readouterr().out)}
    assert listed[anomaly_id]["status"] == "corrected" and listed[anomaly_id]["reason"] == "corrected (add_out) by hr1: forgot to punch out"
