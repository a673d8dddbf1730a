"""The web console in a real headless browser (Debian's chromium, driven by selenium over
chromedriver): open the runs list, watch a new run appear in it live, open the paused support
run, see the machine with its path, approve the refund, and see the run finish.

The README's screenshot of the console is taken here (TOOLFSM_UPDATE_SCREENSHOT=1 writes it to
docs/console.png; otherwise to the test's folder)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from _console import REPO, console, toolfsm

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _browser() -> object:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    if missing or not _has("selenium") or not _has("starlette"):
        if os.environ.get("TOOLFSM_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test needs chromium, chromedriver, selenium: {missing}")
        pytest.skip("chromium + chromium-driver (apt) and selenium are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1100"):
        options.add_argument(flag)
    options.add_argument("--disable-dev-shm-usage")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_open_the_paused_support_run_approve_it_and_see_it_finish(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    toolfsm(db, "run", "examples/screening/agent.yaml")
    toolfsm(db, "run", "examples/support/agent.yaml")
    driver = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, 60)  # type: ignore[arg-type]
    try:
        with console(db, 8790) as url:
            driver.get(f"{url}/")  # type: ignore[attr-defined]
            rows = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#rows tr")))
            assert [r.find_element(By.CSS_SELECTOR, ".status").text for r in rows] == [
                "awaiting_approval",
                "finished",
            ]
            # Live: a run started now shows up without a reload.
            toolfsm(db, "run", "examples/screening/agent.yaml")
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 3)
            assert driver.find_element(By.ID, "count").text == "3 run(s)"  # type: ignore[attr-defined]

            waiting = next(
                r
                for r in driver.find_elements(By.CSS_SELECTOR, "#rows tr")  # type: ignore[attr-defined]
                if "awaiting_approval" in r.text
            )
            waiting.find_element(By.TAG_NAME, "a").click()
            wait.until(ec.presence_of_element_located((By.ID, "approve")))
            assert "refund" in driver.find_element(By.ID, "pending").text  # type: ignore[attr-defined]
            # The machine, drawn on the page, with the path the run took so far.
            current = driver.find_element(By.CSS_SELECTOR, "svg.machine .node.current")  # type: ignore[attr-defined]
            assert current.get_attribute("data-node") == "after:lookup_order"
            taken = driver.find_elements(By.CSS_SELECTOR, "svg.machine .node.taken")  # type: ignore[attr-defined]
            assert {t.get_attribute("data-node") for t in taken} == {"start", "after:lookup_order"}
            assert driver.find_elements(By.CSS_SELECTOR, "svg.machine .edge.taken")  # type: ignore[attr-defined]
            # Nothing on the page came from anywhere else.
            sources = driver.execute_script(  # type: ignore[attr-defined]
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert all(s.startswith(url) for s in sources), sources

            shot = (
                REPO / "docs" / "console.png"
                if os.environ.get("TOOLFSM_UPDATE_SCREENSHOT")
                else tmp_path / "console.png"
            )
            driver.save_screenshot(str(shot))  # type: ignore[attr-defined]
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            driver.find_element(By.ID, "approve").click()  # type: ignore[attr-defined]
            wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "finished"))
            assert driver.find_element(By.ID, "stop-reason").text == "terminal_tool"  # type: ignore[attr-defined]
            decisions = driver.find_element(By.ID, "decisions").text  # type: ignore[attr-defined]
            assert "approve" in decisions and "call_3" in decisions
            assert "close_ticket" in driver.find_element(By.TAG_NAME, "main").text  # type: ignore[attr-defined]
    finally:
        driver.quit()  # type: ignore[attr-defined]
    shown = toolfsm(db, "runs", "show", "--json").stdout
    assert '"stop_reason": "terminal_tool"' in shown
