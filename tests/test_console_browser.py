"""The console in headless Chromium (Debian's chromium and chromedriver, driven by Selenium; nothing downloaded):
sign in, approve a run, see a viewer denied, and every page rendered (screenshots into a directory when
CUSTODES_CONSOLE_SCREENSHOTS names one, e.g. docs/console)."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from console_support import (
    PEOPLE,
    SSO_PASSWORD,
    TOKENS,
    Served,
    register_console,
    served,
    settings_for,
    sso_provider,
    with_sso,
)
from custodes.config import DatabaseSettings
from custodes.sandbox.oidc import create_app
from custodes.sandbox.server import running

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
SHOTS = os.environ.get("CUSTODES_CONSOLE_SCREENSHOTS")
T = TypeVar("T")


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium with a new empty profile; Selenium Manager is kept offline."""
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(
            f"the console's browser tests need {CHROMIUM} and {CHROMEDRIVER}: "
            "apt-get install -y chromium chromium-driver (.ci/run does this)"
        )
    os.environ["SE_OFFLINE"] = "true"
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def in_thread(serve: Callable[[], AbstractAsyncContextManager[T]]) -> Iterator[T]:
    """Serve (the seeded console, a simulator) from its own event loop in a thread (Selenium blocks the test's
    thread)."""
    ready: queue.Queue[tuple[T, Callable[[], object]] | BaseException] = queue.Queue()

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            async with serve() as running:
                ready.put((running, lambda: loop.call_soon_threadsafe(stopping.set)))
                await stopping.wait()
        except BaseException as exc:
            ready.put(exc)
            raise

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    item = ready.get(timeout=120)
    if isinstance(item, BaseException):
        raise item
    running, stop = item
    try:
        yield running
    finally:
        stop()
        thread.join(timeout=30)


@pytest.fixture
def console(chrome: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A seeded console on SQLite (the store suite covers PostgreSQL), and a browser with no cookies."""
    database = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    with in_thread(lambda: served(settings_for(database, tmp_path, monkeypatch))) as running:
        chrome.delete_all_cookies()
        chrome.get_log("browser")  # start with an empty log
        yield running


def page_problems(chrome: WebDriver) -> list[str]:
    """Errors the page logged (a script or style refused by the Content-Security-Policy, a failed load)."""
    return [entry["message"] for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for_text(chrome: WebDriver, text: str) -> None:
    WebDriverWait(chrome, 10).until(seen.text_to_be_present_in_element((By.TAG_NAME, "main"), text))


def sign_in(chrome: WebDriver, url: str, who: str, path: str = "/") -> None:
    """Open a page, get sent to sign in, and sign in with the keyboard alone."""
    chrome.get(f"{url}{path}")
    WebDriverWait(chrome, 10).until(seen.title_contains("Sign in"))
    # the token field takes the focus (autofocus), which the browser may give a moment after the title: waited for
    WebDriverWait(chrome, 10).until(lambda driver: driver.switch_to.active_element.get_attribute("id") == "token")
    field = chrome.switch_to.active_element
    field.send_keys(TOKENS[who], Keys.ENTER)
    WebDriverWait(chrome, 10).until(seen.presence_of_element_located((By.CSS_SELECTOR, "form.who")))
    assert chrome.find_element(By.CSS_SELECTOR, ".role").text == ("approver" if who == "approver2" else who)


def test_sign_in_and_approve_a_run(chrome: WebDriver, console: Served) -> None:
    sign_in(chrome, console.url, "approver2", "/approvals")
    assert chrome.current_url == f"{console.url}/approvals"
    plan = chrome.find_element(By.CSS_SELECTOR, "table.plan")
    assert f"containing {PEOPLE[0]}" in plan.text
    comment = chrome.find_element(By.CSS_SELECTOR, f"#c-a-{console.run_id}-tell")
    assert chrome.find_element(By.CSS_SELECTOR, f"label[for='c-a-{console.run_id}-tell']").text == "Comment"
    comment.send_keys("checked with the manager")
    chrome.find_element(By.XPATH, "//button[starts-with(normalize-space(), 'Approve plan')]").click()
    wait_for_text(chrome, "Approved: the run continues")
    assert chrome.current_url.startswith(f"{console.url}/runs/{console.run_id}")
    assert "waiting" not in chrome.find_element(By.CSS_SELECTOR, "dl.facts").text
    chrome.find_element(By.LINK_TEXT, "Approvals").click()
    wait_for_text(chrome, "Nothing is waiting for approval.")
    # htmx swapped the body (no new document) and put the focus on the main content
    assert chrome.execute_script("return typeof htmx") == "object"
    # the focus moves once htmx has settled the swap (20 ms after it), not with the swap's text: waited for
    WebDriverWait(chrome, 10).until(lambda driver: driver.switch_to.active_element.get_attribute("id") == "main")
    assert page_problems(chrome) == []


def test_a_viewer_is_denied(chrome: WebDriver, console: Served) -> None:
    sign_in(chrome, console.url, "viewer", "/approvals")
    main = chrome.find_element(By.TAG_NAME, "main").text
    assert console.run_id[:12] in main and "shown to approvers" in main and "alice" not in main
    assert not chrome.find_elements(By.XPATH, "//button[contains(., 'Approve') or contains(., 'Deny')]")
    nav = chrome.find_element(By.CSS_SELECTOR, "nav[aria-label='Console']").text
    assert "Audit log" not in nav
    chrome.get(f"{console.url}/audit")
    wait_for_text(chrome, "the audit log needs the admin role")
    # a forged approval, with the viewer's own CSRF token: the server refuses it
    chrome.get(f"{console.url}/approvals")
    chrome.execute_script(
        """
        const form = document.createElement('form');
        form.method = 'post';
        form.action = arguments[0];
        for (const [name, value] of [['csrf', document.querySelector('input[name=csrf]').value],
                                     ['step', 'tell'], ['plan_hash', '0000000000000000']]) {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = name; input.value = value; form.appendChild(input);
        }
        document.body.appendChild(form);
        HTMLFormElement.prototype.submit.call(form);
        """,
        f"{console.url}/runs/{console.run_id}/approve",
    )
    wait_for_text(chrome, "needs the approver role")
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Not allowed"


PAGES = [
    ("board", "/", "Risk board"),
    ("person", "/people/{alice}", "Risk over time"),
    ("approvals", "/approvals", "Pending approvals"),
    ("run", "/runs/{run}", "Steps"),
    ("playbooks", "/playbooks", "Recent runs"),
    ("rules", "/rules", "Sigma rules loaded"),
    ("connectors", "/connectors", "okta-prod"),
    ("audit", "/audit", "run.request"),
    ("cases", "/cases", "Case queue"),
    ("case", "/cases/{case}", "Timeline"),
]


def test_every_page_renders(chrome: WebDriver, console: Served) -> None:
    sign_in(chrome, console.url, "admin")
    alice = chrome.find_element(By.CSS_SELECTOR, "table.board tbody a").text
    assert alice.startswith("p-")
    chrome.get(f"{console.url}/cases")
    case = (chrome.find_element(By.CSS_SELECTOR, "main table tbody a").get_attribute("href") or "").rsplit("/", 1)[-1]
    for name, path, text in PAGES:
        chrome.get(console.url + path.format(alice=alice, run=console.run_id, case=case))
        wait_for_text(chrome, text)
        assert chrome.find_element(By.TAG_NAME, "h1").text not in {"Not allowed", "Not found", "Error"}
        assert page_problems(chrome) == [], name
        if SHOTS:
            folder = Path(SHOTS)
            folder.mkdir(parents=True, exist_ok=True)
            height = chrome.execute_script("return document.documentElement.scrollHeight")
            chrome.set_window_size(1280, min(max(int(height), 600), 2400))
            chrome.save_screenshot(str(folder / f"{name}.png"))
            chrome.set_window_size(1280, 900)
    if SHOTS:
        chrome.delete_all_cookies()
        chrome.get(f"{console.url}/signin")
        chrome.save_screenshot(str(Path(SHOTS) / "signin.png"))


@pytest.fixture
def unfiled(chrome: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A seeded console whose findings do not open cases by themselves (an analyst triages them)."""
    settings = settings_for(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"), tmp_path, monkeypatch)
    settings.cases.auto_open = False
    with in_thread(lambda: served(settings)) as running:
        chrome.delete_all_cookies()
        chrome.get_log("browser")
        yield running


def test_triage_a_finding_into_a_case(chrome: WebDriver, unfiled: Served) -> None:
    sign_in(chrome, unfiled.url, "analyst")
    chrome.find_element(By.CSS_SELECTOR, "table.board tbody a").click()
    wait_for_text(chrome, "Risk over time")
    finding = chrome.find_element(By.XPATH, "//tr[starts-with(@id, 'finding-')]")
    title = finding.find_element(By.TAG_NAME, "td").text.split("  ")[0]
    finding.find_element(By.XPATH, ".//button[normalize-space() = 'Open a case']").click()
    wait_for_text(chrome, "The finding is in the case.")
    case_url = chrome.current_url.split("?")[0]
    assert chrome.find_element(By.TAG_NAME, "h1").text.startswith(title.split(" r")[0][:20])
    members = chrome.find_element(By.XPATH, "//section[@aria-labelledby='members-title']").text
    assert "finding" in members and "api:analyst-token" in members
    # move it to triage and assign it, with the keyboard-reachable labelled form
    chrome.find_element(By.CSS_SELECTOR, "#case-new-status option[value='triage']").click()
    assignee = chrome.find_element(By.ID, "case-assignee")
    assignee.clear()
    assignee.send_keys("analyst-token")
    chrome.find_element(By.ID, "case-reason").send_keys("looking at it")
    chrome.find_element(By.XPATH, "//button[normalize-space() = 'Save']").click()
    wait_for_text(chrome, "Updated.")
    facts = chrome.find_element(By.CSS_SELECTOR, "dl.facts").text
    assert "triage" in facts and "analyst-token" in facts and "overdue" not in facts
    chrome.find_element(By.ID, "case-comment").send_keys("benign: handover before leaving")
    chrome.find_element(By.XPATH, "//button[normalize-space() = 'Comment']").click()
    wait_for_text(chrome, "Comment added.")
    timeline = chrome.find_element(By.XPATH, "//section[@aria-labelledby='timeline-title']").text
    for step in ("opened", "linked", "updated", "commented"):
        assert step in timeline
    # the queue lists it, and the person's page now links the finding to it
    chrome.find_element(By.LINK_TEXT, "Cases").click()
    wait_for_text(chrome, "Case queue")
    assert case_url.rsplit("/", 1)[-1] in chrome.find_element(By.TAG_NAME, "main").text
    chrome.back()
    chrome.back()
    assert page_problems(chrome) == []


@pytest.fixture
def sso_console(chrome: WebDriver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A seeded console signing in through the sandbox OpenID Connect provider (each on its own loopback port)."""
    provider = sso_provider()
    with in_thread(lambda: running(create_app(provider))) as issuer:
        database = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
        settings = with_sso(settings_for(database, tmp_path, monkeypatch), issuer, monkeypatch)
        with in_thread(lambda: served(settings)) as console:
            register_console(provider, console.url)
            chrome.delete_all_cookies()
            chrome.get_log("browser")
            yield console


def test_sign_in_through_single_sign_on(chrome: WebDriver, sso_console: Served) -> None:
    url = sso_console.url
    chrome.get(f"{url}/approvals")
    WebDriverWait(chrome, 10).until(seen.title_contains("Sign in"))
    chrome.find_element(By.ID, "sso").send_keys(Keys.ENTER)
    WebDriverWait(chrome, 10).until(seen.title_contains("Sandbox identity provider"))
    chrome.find_element(By.ID, "username").send_keys("carol")
    chrome.find_element(By.ID, "password").send_keys(SSO_PASSWORD, Keys.ENTER)
    # the provider redirects to the callback, whose page moves on to the page first asked for
    WebDriverWait(chrome, 10).until(seen.url_to_be(f"{url}/approvals"))
    WebDriverWait(chrome, 10).until(seen.presence_of_element_located((By.CSS_SELECTOR, "form.who")))
    who = chrome.find_element(By.CSS_SELECTOR, "form.who").text
    assert "oidc:carol" in who and chrome.find_element(By.CSS_SELECTOR, ".role").text == "approver"
    assert chrome.find_elements(By.XPATH, "//button[starts-with(normalize-space(), 'Approve plan')]")
    assert [problem for problem in page_problems(chrome) if url in problem] == []
