"""The service's web page in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium):
the token asked for, an image picked, options set, submitted; the progress bar fed by the job's state; the orbit
video, the contact sheet, the latency table and the downloads shown. Marked ``serve`` (full suite, CI).

``SV3D_SCREENSHOT=path.png`` keeps a screenshot of the finished page (the README's).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
webdriver = pytest.importorskip("selenium.webdriver")

from tests.serving import SAMPLE_IMAGE, TOKEN, Server, wait_until  # noqa: E402

pytestmark = pytest.mark.serve

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER = "/usr/bin/chromedriver"
WINDOW = (1100, 1450)
STEPS = 1000                                 # over 5 s on the test server (tests/serving.py): long enough to watch


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    binary = next((b for b in CHROMIUM if Path(b).exists()), None)
    if binary is None or not Path(DRIVER).exists():
        msg = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg + " -- CI installs them (.ci/run)")
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--autoplay-policy=no-user-gesture-required"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_page_submits_follows_and_shows_the_result(toy_export, tmp_path, browser):
    from selenium.webdriver.common.by import By

    server = Server(toy_export[0], tmp_path / "data").start()
    try:
        browser.get(server.base + "/")
        el = lambda i: browser.find_element(By.ID, i)          # noqa: E731
        wait_until(lambda: "sv3d_u" in el("server").text, 30, "the page to read /healthz")
        el("image").send_keys(str(SAMPLE_IMAGE))
        el("job-form").find_element(By.NAME, "steps").send_keys(str(STEPS))
        el("job-form").find_element(By.NAME, "seed").send_keys("5")
        el("submit").click()
        wait_until(lambda: el("token-row").is_displayed() and "token" in el("error").text, 30, "the token request")
        el("token").send_keys(TOKEN)
        el("job-form").find_element(By.NAME, "steps").click()   # the token field's change event stores it
        ahead = [server.submit(steps=STEPS // 5).json()["id"] for _ in range(2)]     # the page's job waits behind
        el("submit").click()
        wait_until(lambda: "queued, position" in el("status").text, 30, "the queue position")
        # the progress bar follows the running job (step i of N), then completes
        wait_until(lambda: 0 < float(el("progress").get_attribute("value")) < 1, 60, "a partly filled progress bar")
        assert f"of {STEPS}" in el("status").text, el("status").text
        assert [server.job(i)["state"] for i in ahead] == ["done", "done"]
        wait_until(lambda: el("result").is_displayed(), 120, "the result section")
        assert el("status").get_attribute("data-state") == "done" and f"done: {STEPS} steps" in el("status").text
        assert float(el("progress").get_attribute("value")) == 1.0
        wait_until(lambda: browser.execute_script(
            "return document.getElementById('sheet').naturalWidth") > 0, 30, "the contact sheet to load")
        wait_until(lambda: browser.execute_script(
            "const v = document.getElementById('video'); return v.readyState >= 1 && !v.error"), 30,
            "the orbit video to load")
        rows = [r.text.split()[0] for r in el("latency").find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert {"clip_encoder", "vae_encoder", "unet", "vae_decoder", "total"} <= set(rows), rows
        links = [a.text for a in el("downloads").find_elements(By.TAG_NAME, "a")]
        assert links == ["video.mp4", "video.gif", "contact_sheet.png", "info.json", "frames.zip", "input.png"]
        assert el("error").is_displayed() is False
        shot = os.environ.get("SV3D_SCREENSHOT")
        path = tmp_path / "page.png"
        browser.save_screenshot(str(path))
        assert path.stat().st_size > 10_000
        if shot:
            shutil.copyfile(path, shot)
    finally:
        assert server.stop() == 130
