"""Screenshots for the README from a finished demo (Debian chromium + chromedriver via selenium):

    python scripts/readme_screenshots.py runs/demo/report.html CONSOLE_LOG docs/img
"""
import html
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CONSOLE = ("<html><body style='margin:0;background:#1e1e1e'><pre id='c' style='display:inline-block;"
           "margin:0;padding:12px;color:#ddd;background:#1e1e1e;font:13px monospace'>{}</pre></body></html>")


def main(report: Path, log: Path, outdir: Path) -> None:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--hide-scrollbars", "--disable-dev-shm-usage", "--window-size=1200,800"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=opts)
    try:
        d.set_window_size(1200, 800)
        d.get(report.resolve().as_uri())
        time.sleep(3)
        d.save_screenshot(str(outdir / "demo_report.png"))  # the first screen
        page = outdir / ".console.html"
        page.write_text(CONSOLE.format(html.escape(log.read_text())))
        d.get(page.resolve().as_uri())
        time.sleep(1)
        d.find_element("id", "c").screenshot(str(outdir / "demo_console.png"))
        page.unlink()
    finally:
        d.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
