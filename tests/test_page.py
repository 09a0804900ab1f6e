"""The page at ``/``, in a real headless Chromium driven by Selenium against a real server
process: upload a PNG, run both modes, and the table lists the detections gRPC gives for the
same bytes. Chromium and chromedriver come from Debian's packages (the Makefile's test set-up
installs them where apt is there); without them this file is skipped with that reason."""
import os
import shutil

import cv2
import pytest

from detector.datasets import digits
from detector_server import DetectorClient
from server_process import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="no chromium and chromedriver: apt-get install chromium chromium-driver")
WAIT = 60  # seconds: the page's calls run the detector on a machine that may be busy
TOKEN = "page-token"
# the canvas against the bare image: the share of pixels that differ, and whether the pixel
# half-way down each detection's left edge does
COMPARE = """
const canvas = document.getElementById("canvas");
const shown = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const bare = document.createElement("canvas");
bare.width = canvas.width; bare.height = canvas.height;
bare.getContext("2d").drawImage(state.image, 0, 0);
const plain = bare.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
let differ = 0;
for (let i = 0; i < shown.length; i += 4) if (shown[i] !== plain[i] || shown[i + 1] !== plain[i + 1]) differ++;
const edges = (state.replies.fcn || state.replies.sliding).detections.map((d) => {
  const i = 4 * (Math.round((d.box[1] + d.box[3]) / 2) * canvas.width + Math.round(d.box[0]));
  return shown[i] !== plain[i] || shown[i + 1] !== plain[i + 1] || shown[i + 2] !== plain[i + 2];
});
return [differ / (shown.length / 4), edges];
"""


@pytest.fixture(scope="module")
def server():
    running = ServerProcess("--workers", "2", "--http-port", "0", "--token", TOKEN)
    yield running
    assert running.terminate() == 0, running.stderr()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager: no telemetry, and no download
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_for(browser, condition, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT, poll_frequency=0.1).until(lambda b: condition(b), message=what)


def rows(browser, table):
    from selenium.webdriver.common.by import By

    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]


def test_uploaded_png_shows_both_modes_and_the_table_lists_its_detections(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    scene = digits.scene(41, size=(320, 240))[0]
    path = str(tmp_path / "scene.png")
    cv2.imwrite(path, scene)
    with DetectorClient(server.address, token=TOKEN, timeout=60) as client:
        expected = client.detect(path)
    assert len(expected.detections) >= 2

    browser.get(server.http_address + "/")
    # the model's description needs the token: the page asks again once it is given
    wait_for(browser, lambda b: "401" in b.find_element(By.ID, "model").text, "the refused description")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "file").send_keys(path)
    wait_for(browser, lambda b: b.find_element(By.ID, "detect").is_enabled(), "the Detect button")
    browser.find_element(By.ID, "detect").click()
    wait_for(browser, lambda b: b.find_element(By.ID, "speedup").text, "both modes' timings")
    assert "default.npz" in browser.find_element(By.ID, "model").text

    found = rows(browser, "detections")
    assert [r[1] for r in found] == [d.label for d in expected.detections]
    assert [r[2] for r in found] == [f"{d.score:.2f}" for d in expected.detections]
    timings = rows(browser, "timings")
    assert [r[0] for r in timings] == ["fully convolutional", "sliding windows"]
    assert [int(r[3]) for r in timings] == [len(expected.detections)] * 2  # both modes find the same
    assert "faster than sliding windows" in browser.find_element(By.ID, "speedup").text
    assert "error" not in browser.find_element(By.ID, "status").get_attribute("class")
    # the heat map: a level picked from the score maps, the canvas at the image's size
    assert len(browser.find_elements(By.CSS_SELECTOR, "#heat-level option")) >= 1
    size = browser.execute_script("const c = document.getElementById('canvas'); return [c.width, c.height];")
    assert size == [320, 240]
    browser.save_screenshot(str(tmp_path / "page.png"))
    covered, edges = browser.execute_script(COMPARE)
    assert covered > 0.9 and all(edges)  # the heat map over the whole image, the boxes over it
    browser.find_element(By.ID, "heat").click()  # the heat map off: only the boxes and labels remain
    covered, edges = browser.execute_script(COMPARE)
    assert 0 < covered < 0.3 and all(edges)


def test_a_sample_scene_can_be_asked_for_and_detected(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.http_address + "/")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("7")
    browser.find_element(By.ID, "mode").send_keys("fully convolutional")
    browser.find_element(By.ID, "sample").click()
    wait_for(browser, lambda b: "sample scene 7: 640x480" in b.find_element(By.ID, "status").text, "the sample")
    browser.find_element(By.ID, "detect").click()
    wait_for(browser, lambda b: b.find_element(By.ID, "status").text.startswith("Done"), "the detections")
    assert len(rows(browser, "timings")) == 1
    assert len(rows(browser, "detections")) == int(rows(browser, "timings")[0][3])
