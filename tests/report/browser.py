"""Headless Debian Chromium driven by selenium for the report tests: open a page, wait for every
<audio> element's metadata, read the images, the shown numbers and the console errors."""

import contextlib
import shutil

import pytest


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


needs_chromium = pytest.mark.skipif(chromium() is None or shutil.which("chromedriver") is None,
                                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")


@contextlib.contextmanager
def headless_chromium():
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1600",
                 "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_script_timeout(120)
        yield driver
    finally:
        driver.quit()


def open_page(driver, path) -> dict:
    """Opens ``path``; returns its audio states [src, readyState, error code, duration], images
    [src, naturalWidth], shown numbers [column, key, field, text], links and SEVERE console entries."""
    driver.get(path.as_uri())
    audio = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const audios = Array.from(document.querySelectorAll('audio'));
        const wait = a => new Promise(r => { if (a.readyState >= 1 || a.error) r(); else {
            a.addEventListener('loadedmetadata', r); a.addEventListener('error', r); a.load(); } });
        Promise.all(audios.map(wait)).then(() => done(audios.map(a => [a.getAttribute('src'), a.readyState,
            a.error ? a.error.code : null, a.duration])));""")
    images = driver.execute_script("return Array.from(document.images).map(i => [i.src, i.naturalWidth]);")
    shown = driver.execute_script("""return Array.from(document.querySelectorAll('span.num')).map(s =>
        [s.dataset.column, s.dataset.key, s.dataset.field, s.textContent]);""")
    links = driver.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'));")
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return {"audio": audio, "images": images, "shown": shown, "links": links, "errors": errors,
            "text": driver.find_element("tag name", "body").text}


def resolve(data, field: str):
    """``data`` at a ``data-field`` path such as ``runs/0/statistics/intervals``."""
    for part in field.split("/"):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data
