"""Opens generated reports in a real headless Chromium (Debian's chromium + chromedriver via selenium).

Checks: no SEVERE console message, every plot div rendered by plotly.js, no network request, hostile
labels shown as text (no script runs), sortable tables sort; saves a full-page screenshot under the
pytest tmp dir and copies it to /tmp/avstudy_report.png (/tmp/avstudy_report_families.png).
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_results import ALL_FAMILIES, FakeStudy, write_study

from reports.build import write_index, write_report

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
HOSTILE = "<script>alert(1)</script>"
HOSTILE_IMG = "<img src=x onerror=\"window.__xss=1\">"


def _missing() -> str | None:
    for p in (CHROMIUM, CHROMEDRIVER):
        if not Path(p).exists():
            return f"{p} not installed (apt-get install -y chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install selenium)"
    return None


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
              "--window-size=1400,1000", f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def _open(driver, path: Path) -> list[dict]:
    driver.get_log("browser")  # drop messages of earlier pages
    driver.get(path.resolve().as_uri())
    deadline = time.time() + 30
    while time.time() < deadline:
        if driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.2)
    time.sleep(0.5)
    return driver.get_log("browser")


def _plots(driver) -> list[list]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('div.plot')).map(function(d){"
        "return [d.id, !!d.querySelector('.main-svg'), !!d._fullLayout, d.getBoundingClientRect().height];});")


def _screenshot(driver, dest: Path) -> None:
    import base64

    h = driver.execute_script("return document.documentElement.scrollHeight")
    w = driver.execute_script("return document.documentElement.scrollWidth")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": False})
    png = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    dest.write_bytes(base64.b64decode(png["data"]))


def _assert_clean(driver, logs: list[dict]) -> None:
    severe = [m for m in logs if m.get("level") == "SEVERE"]
    assert not severe, severe
    resources = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function(e){return e.name;})")
    remote = [r for r in resources if not r.startswith(("file:", "data:", "blob:", "about:"))]
    assert not remote, remote


@pytest.mark.parametrize("families", [(), ALL_FAMILIES], ids=["first-layout", "families"])
def test_report_renders_every_plot(driver, tmp_path, families):
    cfg = FakeStudy(n_trials=40, seed=3, families=families, degenerate_trials=2 if families else 0,
                    augment=bool(families))
    path = write_report(write_study(tmp_path / "study", cfg))
    logs = _open(driver, path)
    _assert_clean(driver, logs)
    plots = _plots(driver)
    assert len(plots) == 11, plots  # every plotting section produced a figure
    assert all(svg and layout and h > 100 for _, svg, layout, h in plots), plots
    text = driver.find_element("tag name", "body").text
    assert "could not be built" not in text
    banners = driver.find_elements("css selector", "div.banner")
    if families:  # degenerate search trials: expected by the design, explained in Sanity checks, no banner
        assert banners == []
        sanity = driver.find_element("id", "sanity").text
        assert "Expected by the design: 2 search trial(s)" in sanity and "search-00000" in sanity
        curves = driver.execute_script("return document.querySelector('#curves div.plot')._fullLayout.annotations"
                                       ".map(function(a){return a.text;})")
        assert curves == list(("miss", *ALL_FAMILIES))  # one panel per condition family
    else:
        assert banners == []
    shot = tmp_path / "report.png"
    _screenshot(driver, shot)
    assert shot.stat().st_size > 50_000
    shutil.copy(shot, f"/tmp/avstudy_report{'_families' if families else ''}.png")


def test_running_study_with_missing_files(driver, tmp_path):
    study = write_study(tmp_path / "running", FakeStudy(n_trials=12, running=True, write_curves=False))
    logs = _open(driver, write_report(study))
    _assert_clean(driver, logs)
    assert all(svg for _, svg, _, _ in _plots(driver))
    text = driver.find_element("tag name", "body").text
    assert "curves.parquet is missing" in text
    assert "could not be built" not in text


def test_hostile_labels_stay_text(driver, tmp_path):
    cfg = FakeStudy(name=HOSTILE, n_trials=15, n_failed=2,
                    labels={"fusion": {"vavl": HOSTILE, "late": HOSTILE_IMG}, "error": HOSTILE_IMG + HOSTILE})
    study = write_study(tmp_path / "xss", cfg)
    logs = _open(driver, write_report(study))
    _assert_clean(driver, logs)
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - alert(1) must never run
    assert driver.execute_script("return window.__xss === undefined")
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    n_scripts = driver.execute_script("return document.scripts.length")
    assert n_scripts == len(_plots(driver)) + 2  # plotly.js + one per figure + table sorting
    body = driver.find_element("tag name", "body").text
    assert HOSTILE in body and "onerror" in body  # shown as text in the header/tables
    legend = driver.execute_script(
        "return Array.from(document.querySelectorAll('.legendtext')).map(function(e){return e.textContent;})")
    assert HOSTILE in legend  # plotly shows the label as text


def test_leaderboard_sorts_on_click(driver, tmp_path):
    study = write_study(tmp_path / "sort", FakeStudy(n_trials=20, final=False, seeds=()))
    _open(driver, write_report(study))
    table = driver.find_element("css selector", "#leaderboard table.sortable")
    headers = table.find_elements("css selector", "thead th")
    col = [h.text for h in headers].index("wall_time_s")

    def column():
        return [float(r.find_elements("tag name", "td")[col].get_attribute("data-v"))
                for r in table.find_elements("css selector", "tbody tr")]
    headers[col].click()
    assert column() == sorted(column())
    headers[col].click()
    assert column() == sorted(column(), reverse=True)


def test_index_links_and_renders(driver, tmp_path):
    root = tmp_path / "root"
    write_study(root / "a", FakeStudy(name="study-a", n_trials=15, seed=1))
    write_study(root / "b", FakeStudy(name="study-b", n_trials=15, seed=2, task="dimensional"))
    index = write_index(root)
    logs = _open(driver, index)
    _assert_clean(driver, logs)
    assert all(svg for _, svg, _, _ in _plots(driver)) and len(_plots(driver)) == 2
    driver.find_elements("link text", "report")[0].click()
    assert driver.current_url.endswith("/a/report.html")
    driver.find_element("partial link text", "all studies").click()
    assert driver.current_url.endswith("/root/index.html")


@pytest.mark.parametrize("warnings", [False, True], ids=["clean", "with-warnings"])
def test_first_screen_shows_the_summary(driver, tmp_path, warnings):
    """Issue 20/22: the first screen (1400 x 1000) opens with the summary's conclusion and its
    table, not with warnings: the sanity banner, when there is one, stays short above it."""
    cfg = FakeStudy(n_trials=20, seed=4, folds=3, seeds=(0, 1), baselines=True, families=("drop_audio",),
                    search_audio_share=warnings)
    logs = _open(driver, write_report(write_study(tmp_path / "study", cfg)))
    _assert_clean(driver, logs)
    driver.execute_script("window.scrollTo(0, 0)")
    first = driver.execute_script("return document.querySelector('main section').id")
    assert first == "summary"
    view = driver.execute_script("return window.innerHeight")
    conclusion = driver.find_element("css selector", "#summary ul.conclusion li")
    assert conclusion.is_displayed() and conclusion.rect["y"] + conclusion.rect["height"] < view, conclusion.rect
    assert "highest mean" in conclusion.text and "95% Student-t" in conclusion.text
    table = driver.find_element("css selector", "#summary table.scores")
    assert table.rect["y"] < view  # the leaderboard starts on the first screen
    assert "probe [baseline]" in table.text  # the baseline is a row
    banners = driver.find_elements("css selector", "div.banner")
    assert bool(banners) == warnings
    if warnings:
        assert "Data condition searched inside cells" in banners[0].text and banners[0].rect["height"] < view / 4


def test_every_figure_saves_as_svg(driver, tmp_path):
    study = write_study(tmp_path / "svg", FakeStudy(n_trials=15, seed=5))
    _open(driver, write_report(study))
    formats = driver.execute_script(
        "return Array.from(document.querySelectorAll('div.plot')).map(function(d){"
        "return d._context.toImageButtonOptions.format;});")
    assert formats and set(formats) == {"svg"}
    buttons = driver.execute_script(
        "return Array.from(document.querySelectorAll('div.plot')).filter(function(d){"
        "return d.querySelector('.modebar-btn[data-title^=\"Download plot\"]');}).length;")
    assert buttons == len(formats)  # every figure's toolbar has the camera button
    url = driver.execute_async_script(
        "var done=arguments[arguments.length-1];var d=document.querySelector('div.plot');"
        "Plotly.toImage(d,{format:'svg',width:600,height:400}).then(done,function(e){done('error: '+e);});")
    assert url.startswith("data:image/svg+xml"), url[:80]


def test_demo_shaped_report_opens_on_the_summary_not_a_warning(driver, tmp_path):
    """A demo-shaped study (3 strategies x 2 training missing rates, 4 search trials per cell,
    the degenerate predictions the demo's search produces): the first screen is the summary."""
    cfg = FakeStudy(name="demo", n_trials=24, n_failed=0, fusions=("vavl", "gated", "foalnet"),
                    families=("drop_audio",), degenerate_trials=8, max_epochs=5)
    path = write_report(write_study(tmp_path / "demo", cfg))
    errors = [e for e in _open(driver, path) if e.get("level") == "SEVERE"]
    assert errors == []
    first = driver.execute_script(
        "var h = window.innerHeight, out = [];"
        "document.querySelectorAll('[role=alert], section, h2').forEach(function(e){"
        "  var r = e.getBoundingClientRect(); if (r.top < h && r.bottom > 0 && r.height > 0)"
        "    out.push([e.tagName, e.id || '', e.getAttribute('role') || '', e.textContent.slice(0, 60)]);});"
        "return out;")
    assert not [e for e in first if e[2] == "alert"], first  # no warning banner on the first screen
    summary = driver.find_element("id", "summary")
    assert summary.is_displayed() and summary.rect["y"] < driver.execute_script("return window.innerHeight")
    # the expected flags are explained further down, in Sanity checks
    sanity = driver.find_element("id", "sanity").text
    assert "Expected by the design: 8 search trial(s)" in sanity and "What each flag means here" in sanity
