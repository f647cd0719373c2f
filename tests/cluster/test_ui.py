"""网页 /ui 与 /docs 在真实的无头 Chromium 里（selenium 驱动 Debian 的 chromium + chromedriver）。

提交经 API，网页里看到作业出现、打开它、读到实时日志，用按钮取消另一个作业，并保存截图。
CI（CI=true）中找不到浏览器即失败；本地找不到时跳过并说明原因。
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray.cluster_utils import Cluster
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from harness.waiting import wait_for
from tests.cluster.conftest import Service
from tests.cluster.live_api import LiveApi

ROOT = Path(__file__).resolve().parents[2]


def _artifacts() -> Path:
    path = Path(os.environ.get("CONDUCTOR_TEST_ARTIFACTS") or ROOT / "tests" / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _find_browser() -> tuple[str, str] | None:
    browser = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    found = _find_browser()
    if found is None:
        reason = "找不到 chromium 与 chromedriver（apt-get install chromium chromium-driver）"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI 中必须运行浏览器测试：{reason}")
        pytest.skip(reason)
    options = Options()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1100")
    # 明确给出 chromedriver 路径：selenium 不会去网上下载驱动
    driver = webdriver.Chrome(service=ChromeService(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def api(service: Service) -> Iterator[LiveApi]:
    live = LiveApi(service)
    yield live
    live.close()


def _wait(driver: webdriver.Chrome, condition, what: str, timeout: float = 30):  # type: ignore[no-untyped-def]
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(
        lambda d: condition(d), message=f"等待超时：{what}"
    )


def _text(driver: webdriver.Chrome, css: str) -> str:
    # 页面每 1.5 秒重画表格：元素可能在取到之后、读文字之前被替换（stale），重取即可
    for _ in range(5):
        try:
            return driver.find_element(By.CSS_SELECTOR, css).text
        except NoSuchElementException:
            return ""
        except StaleElementReferenceException:
            continue
    return ""


def _click(driver: webdriver.Chrome, css: str) -> None:
    """点击；元素恰好被重画时重取再点。"""
    _wait(driver, lambda d: _try_click(d, css), f"点击 {css}")


def _try_click(driver: webdriver.Chrome, css: str) -> bool:
    try:
        driver.find_element(By.CSS_SELECTOR, css).click()
    except (NoSuchElementException, StaleElementReferenceException):
        return False
    return True


def test_web_page_queue_detail_log_and_cancel(
    service: Service, api: LiveApi, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    watched = service.submit(
        f'echo "ui-hello $SLURM_JOB_ID"; while [ ! -e {gate} ]; do sleep 0.05; done; echo ui-bye',
        account="ui_watch",
        name="watched",
        current_working_directory=str(tmp_path),
    )
    victim = service.submit(
        "sleep 300",
        account="ui_victim",
        name="victim",
        current_working_directory=str(tmp_path),
        standard_output="victim.out",
        standard_error="victim.err",
    )
    service.wait_state(watched, "RUNNING")

    browser.get(api.url + "/ui")
    # 队列里出现两个作业；集群使用按节点列出
    _wait(browser, lambda d: _text(d, f"#job-row-{watched}"), "作业出现在队列中")
    _wait(browser, lambda d: _text(d, f"#job-row-{victim}"), "另一个作业出现在队列中")
    assert "RUNNING" in _text(browser, f"#job-row-{watched}")
    assert browser.find_elements(By.CSS_SELECTOR, "#nodes tbody tr")
    assert "CPU 已用" in _text(browser, "#resource-summary")

    # 按账户筛选
    browser.find_element(By.ID, "f-account").send_keys("ui_watch")
    browser.find_element(By.ID, "f-apply").click()
    _wait(browser, lambda d: not _text(d, f"#job-row-{victim}"), "筛选后只剩一个账户的作业")
    assert _text(browser, f"#job-row-{watched}")
    browser.find_element(By.ID, "f-account").clear()
    browser.find_element(By.ID, "f-apply").click()
    _wait(browser, lambda d: _text(d, f"#job-row-{victim}"), "清除筛选")

    # 打开作业：详情与实时日志
    _click(browser, f"#job-row-{watched}")
    _wait(
        browser,
        lambda d: f"ui-hello {watched}" in _text(d, "#log-stdout"),
        "详情里读到作业的实时日志",
    )
    assert "RUNNING" in _text(browser, "#d-state")
    # 详情列出请求与分配到的资源（TRES 写法）
    _wait(browser, lambda d: "分配到的资源" in _text(d, "#d-fields"), "详情列出分配到的资源")
    assert "cpu=1,mem=100M,node=1" in _text(browser, "#d-fields")
    assert "GPU" not in _text(browser, "#nodes thead")  # 没有 GPU 的集群不显示 GPU 列
    gate.touch()
    _wait(browser, lambda d: "ui-bye" in _text(d, "#log-stdout"), "日志尾部随作业输出更新")
    _wait(browser, lambda d: _text(d, "#d-state") == "COMPLETED", "详情显示作业完成")
    assert _text(browser, "#log-stdout").count(f"ui-hello {watched}") == 1  # 增量读取不重复

    # 用按钮取消另一个作业（确认对话框点确定）
    _click(browser, f"#job-row-{victim} button.cancel")
    _wait(browser, lambda d: d.switch_to.alert, "取消确认对话框").accept()
    service.wait_state(victim, "CANCELLED")
    _wait(browser, lambda d: not _text(d, f"#job-row-{victim}"), "已取消的作业离开队列视图")

    # 历史视图里能看到两个作业的结局
    _click(browser, "#f-view option[value='history']")
    _wait(browser, lambda d: "CANCELLED" in _text(d, f"#job-row-{victim}"), "历史视图")
    assert "0:0" in _text(browser, f"#job-row-{watched}")
    browser.save_screenshot(str(_artifacts() / "ui.png"))


def test_nodes_table_shows_gpus_free_and_total(
    service: Service, api: LiveApi, browser: webdriver.Chrome, ray_cluster: Cluster, tmp_path: Path
) -> None:
    """有 GPU 的节点：节点表出现 GPU 空闲/总数一列，GPU 作业运行时空闲减一。"""
    node = ray_cluster.add_node(num_cpus=1, num_gpus=2)
    job = None
    try:
        wait_for(
            lambda: node.node_id in service.scheduler_status()["agents"], 60, what="GPU 节点就绪"
        )
        name = next(
            n["node_name"]
            for n in service.client.get("/dashboard").json()["node_info"]
            if n["node_id"] == node.node_id
        )
        row = f'#nodes tbody tr[data-node="{name}"]'
        browser.get(api.url + "/ui")
        _wait(browser, lambda d: "2 / 2" in _text(d, row), "GPU 节点显示 2 / 2")
        assert "GPU 空闲 / 总数" in _text(browser, "#nodes thead")
        job = service.submit(
            "sleep 300", current_working_directory=str(tmp_path), tres_per_node="gres/gpu:1"
        )
        service.wait_state(job, "RUNNING")
        _wait(browser, lambda d: "1 / 2" in _text(d, row), "GPU 作业运行时空闲为 1")
        assert "GPU 已用 1 / 总数 2" in _text(browser, "#resource-summary")
    finally:
        if job is not None:
            service.client.post(f"/jobs/cancel/{job}")
            wait_for(lambda: service.held_cpus() == 0, 30, what="GPU 作业的资源归还")
        ray_cluster.remove_node(node)


def test_one_time_login_url_logs_the_page_in(
    service: Service, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """认证开启（默认）时：serve 打印的 /ui#login=… 让页面自己换到令牌，之后照常显示作业；
    登录码从地址栏去掉，令牌留在浏览器里，再打开页面不必再登录。"""
    from conductor.auth import create_login_code

    secured = LiveApi(service, service.settings.model_copy(update={"auth": "on"}))
    job = service.submit(
        "true", account="ui_login", name="login", hold=True, current_working_directory=str(tmp_path)
    )
    try:
        browser.get(f"{secured.url}/ui#login={create_login_code(service.engine)}")
        _wait(browser, lambda d: _text(d, f"#job-row-{job}"), "登录后作业出现在队列中")
        assert "login" not in browser.current_url
        token = browser.execute_script("return localStorage.getItem('conductor-token')")
        assert token.startswith("cdt_")
        assert "CPU 已用" in _text(browser, "#resource-summary")
        browser.get(f"{secured.url}/ui")
        _wait(browser, lambda d: _text(d, f"#job-row-{job}"), "再次打开页面仍已登录")
        browser.execute_script("localStorage.clear()")
    finally:
        service.client.post(f"/jobs/cancel/{job}")
        secured.close()


def test_docs_render_offline(api: LiveApi, browser: webdriver.Chrome) -> None:
    """/docs 用本地的 Swagger UI 文件渲染出全部接口（不依赖 CDN）。"""
    browser.get(api.url + "/docs")
    _wait(
        browser,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 8,
        "Swagger UI 渲染出各个接口",
    )
    assert "/jobs/submit" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(_artifacts() / "docs.png"))


def test_nodes_table_shows_a_drained_node_with_its_reason(
    service: Service, api: LiveApi, browser: webdriver.Chrome
) -> None:
    """排空的节点：状态一栏写明“已排空”、原因与操作者；恢复后不再显示。"""
    alive = [n for n in service.client.get("/dashboard").json()["node_info"] if n["available"]]
    name = alive[0]["node_name"]
    row = f'#nodes tbody tr[data-node="{name}"]'
    resp = service.client.post(f"/nodes/{name}/drain", json={"reason": "网页测试维护"})
    assert resp.status_code == 200, resp.text
    try:
        browser.get(api.url + "/ui")
        _wait(browser, lambda d: "已排空：网页测试维护（" in _text(d, row), "节点显示已排空与原因")
    finally:
        assert service.client.post(f"/nodes/{name}/resume").status_code == 200
    _wait(browser, lambda d: _text(d, row) and "排空" not in _text(d, row), "恢复后不再显示排空")
