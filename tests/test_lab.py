"""The explorer notebook on the shared smoke build: headless (papermill) it draws its static view; in a real
JupyterLab, driven in headless Chromium, its widgets move the decoder. And a figure notebook run by hand
on missing runs stops before it writes anything."""
import base64
import json
import os
import socket
import subprocess
import time
import urllib.request
import uuid

import nbformat
import pytest

from aevb import grid
from conftest import PY, ROOT, run_notebook

pytestmark = pytest.mark.slow

def test_the_explorer_draws_its_static_view_headless(smoke_paper, tmp_path):
    out, _ = smoke_paper
    result = run_notebook(tmp_path, "-p", "profile", "smoke", "-p", "runs_dir", out / "runs", name="explore")
    assert result.returncode == 0, result.stderr[-3000:]
    cells = nbformat.read(tmp_path / "explore.ipynb", as_version=4).cells
    outputs = [o for c in cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # manifold, prior samples, codes, reconstructions, interpolations
    assert all(len(base64.b64decode(o["data"]["image/png"])) > 5000 for o in images)
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)  # the explorer
    text = "".join(o.get("text", "") for o in outputs)
    assert "mnist/aevb_z2_report_s1 (smoke)" in text


def test_a_figure_notebook_by_hand_on_missing_runs_stops_before_writing(tmp_path):
    figures = tmp_path / "figures"
    result = run_notebook(tmp_path, "-p", "profile", "smoke", "-p", "runs_dir", tmp_path / "no-runs",
                          "-p", "figures_dir", figures, name="burda2015")
    assert result.returncode != 0
    n = len(grid.notebook_runs("burda2015", profile="smoke"))
    assert f"burda2015 reads {n} runs of the smoke profile; {n} are not finished" in result.stderr + result.stdout
    assert not figures.exists()  # no empty table, no findings file


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def explore_in_lab(runs_dir, work, open_browser):
    """Open notebooks/explore.ipynb (reading runs_dir as the smoke profile) in a JupyterLab started here, run
    all its cells in headless Chromium, move the first z slider; return the decoder's image before and after
    (PNG screenshots of the element) and its src before and after, then click the latent plane; return also
    the sliders' readouts before and after the click. Screenshots of the page go into `work`."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
    lab = work / "lab"
    lab.mkdir(parents=True)
    nb = json.loads((ROOT / "notebooks" / "explore.ipynb").read_text())
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] += [f"\nprofile = \"smoke\"\nruns_dir = {str(runs_dir)!r}\n"]
    (lab / "explore.ipynb").write_text(json.dumps(nb, indent=1))
    port, token = free_port(), uuid.uuid4().hex
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(work / "runtime"), "JUPYTERLAB_WORKSPACES_DIR": str(work / "ws"),
           "JUPYTER_CONFIG_DIR": str(work / "config")}
    server = subprocess.Popen([PY, "-m", "jupyter", "lab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
                               f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
                               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={lab}"],
                              stdout=open(work / "lab.log", "w"), stderr=subprocess.STDOUT, env=env)
    driver = None
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (work / "lab.log").read_text()[-3000:]
                time.sleep(1)
        driver = open_browser(work)
        driver.get(f"http://127.0.0.1:{port}/lab/tree/explore.ipynb?token={token}")
        wait = WebDriverWait(driver, 180, poll_frequency=0.5)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-Notebook-ExecutionIndicator[data-status='idle']")
                   or d.find_elements(By.XPATH, "//*[contains(@class,'jp-Toolbar')]//*[contains(text(),'Idle')]")
                   or d.find_elements(By.CSS_SELECTOR, ".jp-mod-idle, [title*='Kernel Idle']"))

        dialogs = []

        def accept_dialogs():  # e.g. the kernel chooser, when the kernel is slow to start: accept its choice
            for dialog in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog"):
                dialogs.append(dialog.text)
                dialog.find_element(By.CSS_SELECTOR, ".jp-Dialog-button.jp-mod-accept").click()
                time.sleep(1)

        def menu(top, item):
            accept_dialogs()
            driver.find_element(By.XPATH, f"//div[contains(@class,'lm-MenuBar-itemLabel') and text()='{top}']").click()
            wait.until(lambda d: d.find_elements(By.XPATH, f"//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']"))
            driver.find_element(By.XPATH, f"//div[contains(@class,'lm-Menu-itemLabel') and text()='{item}']").click()
        ran = lambda d: any(any(c.isdigit() for c in p.text) for p in d.find_elements(By.CSS_SELECTOR, ".jp-InputPrompt"))
        for attempt in range(4):  # a click while the kernel still connects can be lost: run all again
            menu("Run", "Run All Cells")
            try:
                WebDriverWait(driver, 20, poll_frequency=0.5).until(ran)
                break
            except TimeoutException:
                pass
        images = lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea img.widget-image")
        wait.until(lambda d: len(images(d)) >= 2 and d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .noUi-handle")
                   and images(d)[0].get_attribute("src"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", images(driver)[0])
        time.sleep(1)
        driver.save_screenshot(str(work / "before.png"))
        decoder = images(driver)[0]
        before_src, before_png = decoder.get_attribute("src"), decoder.screenshot_as_png
        handle = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .noUi-handle")[0]
        ActionChains(driver).click_and_hold(handle).move_by_offset(60, 0).release().perform()
        handle.send_keys(*[Keys.ARROW_RIGHT] * 5)
        wait.until(lambda d: images(d)[0].get_attribute("src") != before_src)
        time.sleep(2)  # the last slider value's image
        driver.save_screenshot(str(work / "after.png"))
        decoder = images(driver)[0]
        after_src, after_png = decoder.get_attribute("src"), decoder.screenshot_as_png
        # a click on the latent plane (Nz = 2) moves z there: the sliders and the decoder follow
        readouts = lambda d: [r.text for r in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea .widget-readout")[:2]]
        slid = readouts(driver)
        ActionChains(driver).move_to_element_with_offset(images(driver)[1], -30, 25).click().perform()
        wait.until(lambda d: images(d)[0].get_attribute("src") != after_src and readouts(d) != slid)
        clicked = readouts(driver)
        errors = [e.text for e in driver.find_elements(
            By.CSS_SELECTOR, ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")]
        slider = slid[0]
        assert driver.find_elements(By.XPATH, "//*[contains(@class,'jp-StatusBar')]//*[contains(text(),'Python (aevb)')]")
        (work / "dialogs.txt").write_text("\n---\n".join(dialogs))
        return before_png, after_png, before_src, after_src, errors, slider, slid, clicked
    except Exception:
        if driver is not None:
            driver.save_screenshot(str(work / "failed.png"))  # what the page showed
        raise
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(30)


def test_the_explorer_in_jupyterlab_reacts_to_its_slider(smoke_paper, tmp_path, chromium):
    out, _ = smoke_paper
    before_png, after_png, before_src, after_src, errors, slider, slid, clicked = explore_in_lab(
        out / "runs", tmp_path, chromium)
    assert not errors, errors
    assert before_src != after_src and before_png != after_png  # the decoder's mean moved with z1
    assert float(slider.replace("−", "-")) > 0  # z1's readout, from 0.00
    assert clicked != slid  # a click on the plane moved z (and the decoder: the wait above)
