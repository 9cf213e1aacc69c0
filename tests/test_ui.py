"""The study report as a reader sees it: MLflow's UI and optuna-dashboard in a real browser.

A real tiny study (the study command, tiny trials) fills an MLflow store and an Optuna
storage; `mlflow server` and `optuna-dashboard` serve them on free loopback ports, and
Debian's Chromium, driven headless by selenium through the system chromedriver, clicks
from MLflow's home page to the study's importance ranking, counting the clicks.
Screenshots go to the test's tmp dir, and to $PPO_EXP_SCREENSHOTS if set (the README's
docs/img/ are made this way: `PPO_EXP_SCREENSHOTS=docs/img pytest tests/test_ui.py`).
`.ci/run` installs chromium and chromium-driver with apt when they are missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY_RUN
from mlflow.tracking import MlflowClient

from ppo_exp.study.description import NOTE_TAG

pytestmark = pytest.mark.slow
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
N_TRIALS = 6  # enough complete trials (>= 5) for bootstrap intervals in the Description
MAX_CLICKS = 3  # home page -> the importance ranking (the target)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve(name: str, argv: list[str], url: str, cwd: Path, env: dict) -> Iterator[str]:
    """Run a server until `url` answers; stop its whole process group afterwards."""
    log = open(cwd / f"{name}.log", "w")
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180  # a loaded 2-core machine starts MLflow slowly
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = (cwd / f"{name}.log").read_text()[-2000:]
                    pytest.fail(f"{name} did not serve {url} ({proc.returncode}): {tail}")
                time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory, base_model_path) -> Path:
    """A real tiny core study of N_TRIALS trials, without pruner (all complete)."""
    path = tmp_path_factory.mktemp("ui_study")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{path / 'mlflow.db'}",
           "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "ppo_exp.run", "-m", "study=core", *TINY_RUN,
         "hydra.sweeper.params.ppo_epochs={type:int,low:1,high:2}", "hydra.sweeper.seeds=[0]",
         f"hydra.sweeper.n_trials={N_TRIALS}", "hydra.sweeper.pruner={name:none}"],
        cwd=path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install ...)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1600,1000",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(arg)  # fmt: skip
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    driver.implicitly_wait(30)
    yield driver
    driver.quit()


class Shots:
    """Screenshots into tmp_path and, if $PPO_EXP_SCREENSHOTS is set, there too (small PNGs)."""

    def __init__(self, driver, folder: Path):
        self.driver, self.folder = driver, folder
        self.extra = Path(os.environ["PPO_EXP_SCREENSHOTS"]) if os.environ.get(
            "PPO_EXP_SCREENSHOTS") else None  # fmt: skip

    def __call__(self, name: str) -> Path:
        from PIL import Image

        raw = self.folder / f"{name}.raw.png"
        self.driver.save_screenshot(str(raw))
        path = self.folder / f"{name}.png"
        image = Image.open(raw).convert("RGB")
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.LANCZOS)
        image.quantize(colors=64).save(path, optimize=True)  # UI screenshots: few colours
        if self.extra:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)
        return path


def test_mlflow_ui_shows_the_ranking_within_three_clicks_and_plots_render(
    study_dir, browser, tmp_path
):
    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    (parent,) = [r for r in client.search_runs(["1"]) if r.data.tags.get("ppo_exp.kind") == "study"]
    ranking_line = parent.data.tags[NOTE_TAG].splitlines()[2]  # the first line after the title
    ranked = [p.split("`")[1] for p in ranking_line.split("**")[1::2]]  # "1. `lam`" -> lam
    assert len(ranked) == 5 and "95% CI" in ranking_line, ranking_line

    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
            f"sqlite:///{study_dir / 'mlflow.db'}", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1"]  # fmt: skip
    shot = Shots(browser, tmp_path)
    wait = WebDriverWait(browser, 60)
    with serve("mlflow", argv, f"http://127.0.0.1:{port}/health", study_dir, env):
        browser.get(f"http://127.0.0.1:{port}/")
        # Not a navigation step: the MLflow Assistant panel only takes screen width.
        for button in browser.find_elements(By.CSS_SELECTOR, "button[aria-label='Close']"):
            with contextlib.suppress(Exception):
                button.click()
        clicks = 0

        def click(element) -> None:
            nonlocal clicks
            clicks += 1
            element.click()

        # 1. MLflow 3 opens experiments in its GenAI view: switch to "Model training"
        #    (remembered by the browser afterwards, and `?workflowType=machine_learning`).
        toggle = browser.find_element(By.XPATH, "//*[normalize-space(text())='Model training']")
        shot("mlflow_1_home")
        click(toggle)
        # 2. the experiment: its runs table, one row per study / sweep parent
        click(browser.find_element(By.LINK_TEXT, "ppo_exp"))
        link = browser.find_element(By.PARTIAL_LINK_TEXT, "study core")
        shot("mlflow_2_runs")
        # 3. the study's parent run: the Overview, Description first
        click(link)
        first = f"//strong[starts-with(normalize-space(.), '1.')]/code[text()='{ranked[0]}']"
        code = wait.until(ec.presence_of_element_located((By.XPATH, first)))
        assert clicks <= MAX_CLICKS
        # The ranking is inside the part MLflow shows before "Show more" (~150 px).
        visible = browser.execute_script(
            """const el = arguments[0]; let box = el.parentElement;
               while (box && getComputedStyle(box).maxHeight === 'none') box = box.parentElement;
               const r = el.getBoundingClientRect(), b = box.getBoundingClientRect();
               return r.bottom <= b.bottom + 1;""",
            code,
        )
        assert visible, "the top-ranked parameter is hidden behind 'Show more'"
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", code)
        line = code.find_element(By.XPATH, "./ancestor::p[1]").text
        positions = [line.index(f"{i}. {p}") for i, p in enumerate(ranked, 1)]
        assert positions == sorted(positions), line  # the whole ranking, in order
        shot("mlflow_3_study_overview")
        print(f"clicks from the MLflow home page to the importance ranking: {clicks}")

        # The full Description: table, conclusions and the importance chart (PNG).
        browser.find_element(By.XPATH, "//button[normalize-space(.)='Show more']").click()
        image = browser.find_element(By.CSS_SELECTOR, "img[src*='importance.png']")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
        wait.until(lambda d: d.execute_script("return arguments[0].naturalWidth", image) > 100)
        assert "PED-ANOVA" in browser.find_element(By.TAG_NAME, "table").text
        shot("mlflow_4_importance_chart")

        # An HTML figure in the artifact viewer renders offline (plotly.js inline).
        browser.find_element(By.XPATH, "//*[@role='tab'][normalize-space(.)='Artifacts']").click()
        browser.find_element(By.XPATH, "//*[normalize-space(text())='study']").click()
        name = "parallel_coordinate.html"
        browser.find_element(By.XPATH, f"//*[normalize-space(text())='{name}']").click()
        browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe.mlflow-html-iframe"))
        try:  # plotly drew its SVG: axes named by the params and the objective
            WebDriverWait(browser, 60).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "svg.main-svg")
            )
            drawn = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "svg"))
            assert "eval/score_auc" in drawn and all(p in drawn for p in ranked), drawn
        finally:
            browser.switch_to.default_content()
        shot("mlflow_5_parallel_coordinate")

        # MLflow's chart view of the trials: filter to trials, expand the study's row.
        browser.get(f"http://127.0.0.1:{port}/#/experiments/1/runs?workflowType=machine_learning")
        search = browser.find_element(By.CSS_SELECTOR, "input[data-testid='search-box']")
        search.send_keys("tags.ppo_exp.kind = 'trial'" + Keys.ENTER)
        row = browser.find_element(
            By.XPATH, "//a[normalize-space(.)='study core']/ancestor::*[@role='row'][1]"
        )
        row.find_element(
            By.CSS_SELECTOR, "button[data-component-id*='runnamecellrenderer']"
        ).click()
        browser.find_element(By.PARTIAL_LINK_TEXT, "trial 0")
        browser.execute_script(
            "arguments[0].click()", browser.find_element(By.CSS_SELECTOR, "input[value='CHART']")
        )
        wait.until(
            lambda d: (
                "trial 0"
                in d.find_element(
                    By.XPATH,
                    "//*[normalize-space(text())='eval/score_auc']/ancestor::*[.//*[contains(@class,'main-svg')]][1]",
                ).text
            )
        )
        shot("mlflow_6_trials_chart_view")


def test_optuna_dashboard_names_the_objective(study_dir, browser, tmp_path):
    port = free_port()
    storage = f"sqlite:///{study_dir / 'optuna.db'}"
    argv = [sys.executable, "-c", "from optuna_dashboard._cli import main; main()",
            storage, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with serve("dashboard", argv, f"http://127.0.0.1:{port}/dashboard/", study_dir, os.environ):
        browser.get(f"http://127.0.0.1:{port}/dashboard/")
        browser.find_element(By.PARTIAL_LINK_TEXT, "core").click()
        WebDriverWait(browser, 60).until(
            lambda d: "eval/score_auc" in d.find_element(By.TAG_NAME, "body").text
        )
        assert "Objective 0" not in browser.find_element(By.TAG_NAME, "body").text
        Shots(browser, tmp_path)("optuna_dashboard")
