"""What ``ns-viewer`` shows for a decoded ``.nsc``, checked in a real browser (headless Chromium + selenium).

    apt-get install chromium chromium-driver && pip install selenium     # once
    python bench/viewer_browser.py bench/runs/vqad_refactor/vq_b4.nsc --name vqad

Starts ``ns-viewer --load-config FILE`` (the file alone: ``NSCODEC_DATA`` unset), opens the viewer page, waits for
a rendered frame, saves a screenshot to ``docs/figures/viewer_<name>.png`` and checks: the canvas is not blank (pixel
spread of its centre); the page shows no training controls ("Pause Training", "Train Speed") and shows the file's
name; for a file with levels of detail, moving the "Level of detail" slider to 0 changes the "Level-of-detail
bytes" text and the image (second screenshot ``viewer_<name>_lod0.png``). Writes ``bench/results/viewer_<name>.json``.
Not a CI test: it needs a browser and takes a minute or more of CPU rendering.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, record  # noqa: E402

BIN = Path(sys.executable).parent


def _browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-gl=swiftshader", "--enable-unsafe-swiftshader", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def _canvas_spread(driver) -> float:
    """Std of the grey levels in the centre of the page screenshot (the 3D canvas fills it): ~0 when blank."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L"), dtype=np.float32)
    h, w = img.shape
    return float(img[h // 4 : 3 * h // 4, w // 8 : w // 2].std())


def _lod_text(driver):
    from selenium.webdriver.common.by import By

    for el in driver.find_elements(By.TAG_NAME, "input"):
        v = el.get_attribute("value") or ""
        if v.startswith("level "):
            return v, el
    return None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--name", default=None)
    ap.add_argument("--port", type=int, default=7370)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    from selenium.webdriver.common.by import By

    path = Path(args.file).resolve()
    name = args.name or path.stem
    figs = ROOT / "docs" / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    log = ROOT / "bench" / "runs" / f"viewer_{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "NSCODEC_DATA"}
    t0 = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(BIN / "ns-viewer"), "--load-config", str(path), "--viewer.websocket-port", str(args.port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd="/tmp")
    row = {"file": str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path), "bytes": path.stat().st_size}
    driver = None
    try:
        while "Viewer running locally" not in log.read_text() and "viser" not in log.read_text().lower():
            if proc.poll() is not None or time.time() - t0 > args.timeout:
                raise SystemExit("ns-viewer did not start:\n" + log.read_text()[-3000:])
            time.sleep(1)
        row["viewer_start_seconds"] = round(time.time() - t0, 1)
        driver = _browser(1280, 1400)  # tall enough that the Custom Elements panel is on screen
        driver.get(f"http://localhost:{args.port}")
        blank = _canvas_spread(driver)
        t1 = time.time()
        spread = blank
        while time.time() - t1 < args.timeout:
            time.sleep(5)
            spread = _canvas_spread(driver)
            if spread > 12.0:
                time.sleep(10)  # let the full-resolution pass land
                spread = _canvas_spread(driver)
                break
        row["seconds_to_first_frame"] = round(time.time() - t1, 1)
        shot = figs / f"viewer_{name}.png"
        driver.save_screenshot(str(shot))
        page = driver.find_element(By.TAG_NAME, "body").text
        row.update(screenshot=str(shot.relative_to(ROOT)), canvas_spread=round(spread, 2), canvas_spread_at_open=round(blank, 2),
                   canvas_not_blank=spread > 12.0, shows_pause_training="Pause Training" in page,
                   shows_train_speed="Train Speed" in page, shows_file_name=path.name in page,
                   shows_view_only="view only" in page)
        text, _ = _lod_text(driver)
        row["lod_text"] = text
        if text is not None:
            # the level slider is the one whose range is the file's levels (the label text says "level L/top")
            top = text.split("/")[1].split(":")[0]
            target = next(s for s in driver.find_elements(By.CSS_SELECTOR, "[role=slider]")
                          if s.get_attribute("aria-valuemax") == top and s.get_attribute("aria-valuenow") == top)
            from selenium.webdriver.common.action_chains import ActionChains

            ActionChains(driver).move_to_element(target).click_and_hold().move_by_offset(-200, 0).release().perform()
            deadline = time.time() + args.timeout
            new_text = text
            while time.time() < deadline and new_text == text:
                time.sleep(2)
                new_text, _ = _lod_text(driver)
            row["lod_text_after_slider_to_0"] = new_text
            row["lod_label_changed"] = new_text != text
            time.sleep(20)
            shot0 = figs / f"viewer_{name}_lod0.png"
            driver.save_screenshot(str(shot0))
            row["screenshot_lod0"] = str(shot0.relative_to(ROOT))
    finally:
        if driver is not None:
            driver.quit()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(json.dumps(row, indent=2))
    record(f"viewer_{name}", [row], "python bench/viewer_browser.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
