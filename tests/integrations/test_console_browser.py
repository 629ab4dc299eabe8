"""The web console in a real headless Chromium (Debian's chromium and chromium-driver, driven
with selenium): an approver of folder /a logs in, sees only its folder's waiting agent,
approves it and the waiting `tether register-new` completes; declines another, whose agent
exits 11 with the reason; a form posted without its CSRF token is refused. Screenshots of the
pending page (desktop and phone width) are kept under target/console-screenshots/.

Needs chromium and chromedriver on PATH (.ci/run installs them); without them the test is
skipped, except in CI (CI=true), where it fails.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from integration_helpers import (
    REG_PASSWORD,
    REG_USER,
    REPO,
    SITE,
    TETHER_BIN,
    Receiver,
    require_binaries,
)

APPROVER_PASSWORD = "Approver-pw-4c1e77"
SHOTS = REPO / "target" / "console-screenshots"


def _browser_tools():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        driver = None
    if not (chromium and driver):
        msg = "chromium, chromedriver and selenium are needed (apt install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return chromium, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    require_binaries()
    r = Receiver(tmp_path_factory.mktemp("console-site"))
    r.init()
    d = ["--dir", r.dir]
    for g in ("ga", "gb"):
        r.cli("group", "add", g, *d)
    r.cli("folder", "add", "/a", "--contact-group", "ga", *d)
    r.cli("folder", "add", "/b", "--contact-group", "gb", *d)
    r.cli("rule", "add", "hold-a", "--match", "team=a", "--hold", "--create-in", "/a", *d)
    r.cli("rule", "add", "hold-b", "--match", "team=b", "--hold", "--create-in", "/b", *d)
    for user, group in (("approver-a", "ga"), ("approver-b", "gb")):
        r.cli("user", "add", user, "--role", "agent_approver", "--contact-group", group, "--password-stdin", *d,
              input=APPROVER_PASSWORD)
    r.serve()
    try:
        yield r
    finally:
        r.stop()


def _register_new(site, state_dir, team, host, wait=True):
    """Starts `tether register-new` for a new host (waiting for the decision unless not wait)."""
    pw = state_dir / "password"
    pw.write_text(REG_PASSWORD + "\n")
    pw.chmod(0o600)
    argv = [TETHER_BIN, "register-new", "--json", "-s", site.address, "-i", SITE, "-U", REG_USER,
            "--password-file", str(pw), "--trust-fingerprint", site.fingerprint,
            "--agent-labels", "team:%s" % team, "--agent-labels", "cmk/hostname:%s" % host]
    argv += ["--timeout", "120"] if wait else ["--no-wait"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TETHER_PASSWORD", "TETHER_TOKEN", "TETHER_CONFIG") and "proxy" not in k.lower()}
    env["TETHER_HOME"] = str(state_dir)
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, env=env)


def _queued(site, host):
    out = site.cli("pending", "list", "--json", "--dir", site.dir).stdout
    return [p for p in json.loads(out)["registrations"] if p["labels"].get("cmk/hostname") == host]


def _wait_queued(site, host):
    deadline = time.time() + 60
    while time.time() < deadline:
        if _queued(site, host):
            return
        time.sleep(0.2)
    raise AssertionError("%s never reached the approval queue" % host)


def _finish(p):
    out, err = p.communicate(timeout=120)
    return p.returncode, json.loads(out), err


@pytest.fixture
def browser():
    chromium, driver = _browser_tools()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,900",
              # The receiver's certificate chains to the site CA, which this throwaway browser
              # profile does not trust; only this test ignores that.
              "--ignore-certificate-errors"):
        opts.add_argument(a)
    # Never let Selenium Manager look for drivers on the network: Debian's is given.
    os.environ.setdefault("SE_OFFLINE", "true")
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    try:
        yield d
    finally:
        d.quit()


def _shot(driver, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / name
    driver.save_screenshot(str(path))
    print("screenshot: %s" % path)
    return path


def _wait_for(browser, css, text=""):
    """The text of the element once the page a click led to shows it (a form post loads the
    next page asynchronously, so the old page may still be there right after the click)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return browser.find_element(By.CSS_SELECTOR, css).text


def test_approver_decides_in_the_browser(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    (tmp_path / "a1").mkdir()
    (tmp_path / "a2").mkdir()
    (tmp_path / "b1").mkdir()
    waiting = _register_new(site, tmp_path / "a1", "a", "browser-a1")
    declined = _register_new(site, tmp_path / "a2", "a", "browser-a2")
    other = _register_new(site, tmp_path / "b1", "b", "browser-b1", wait=False)
    assert _finish(other)[0] == 0
    for h in ("browser-a1", "browser-a2", "browser-b1"):
        _wait_queued(site, h)
    base = "https://%s/%s/tether-admin" % (site.address, SITE)

    # Log in with the keyboard-reachable, labelled form.
    browser.get(base + "/")
    assert "/login" in browser.current_url
    browser.find_element(By.CSS_SELECTOR, "label[for=user]")
    browser.find_element(By.ID, "user").send_keys("approver-a")
    browser.find_element(By.ID, "password").send_keys(APPROVER_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait_for(browser, "h1", "Pending registrations")
    assert browser.current_url.endswith("/pending"), browser.current_url
    cookie = [c for c in browser.get_cookies() if c["name"].startswith("__Host-tether-console-")]
    assert cookie and cookie[0]["secure"] and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict"

    page = browser.page_source
    assert "browser-a1" in page and "browser-a2" in page
    assert "browser-b1" not in page, "another folder's agent is invisible"
    assert "rule hold-a" in page
    _shot(browser, "pending.png")
    browser.set_window_size(390, 844)
    _shot(browser, "pending-phone.png")
    browser.set_window_size(1280, 900)

    a1 = _queued(site, "browser-a1")[0]["uuid"]
    a2 = _queued(site, "browser-a2")[0]["uuid"]

    # A form posted without its CSRF token is refused and changes nothing.
    browser.execute_script(
        "document.querySelectorAll('#p-%s form input[name=csrf]').forEach(function (e) { e.remove(); });" % a1)
    browser.find_element(By.CSS_SELECTOR, "#p-%s button.approve" % a1).click()
    _wait_for(browser, "h1", "Form refused")
    assert _queued(site, "browser-a1"), "still pending"

    # Approve: the waiting agent completes.
    browser.get(base + "/pending")
    browser.find_element(By.CSS_SELECTOR, "#p-%s button.approve" % a1).click()
    flash = _wait_for(browser, "[role=status]", "Approved")
    assert browser.current_url.endswith("/pending")
    assert "Approved: host browser-a1 is registered" in flash, flash
    assert not browser.find_elements(By.ID, "p-%s" % a1), "no longer pending"
    _shot(browser, "approved.png")
    rc, doc, err = _finish(waiting)
    assert rc == 0 and doc["status"] == "success", (doc, err)

    # Decline with a reason: that agent exits 11 with it.
    browser.find_element(By.ID, "reason-%s" % a2).send_keys("not one of ours")
    browser.find_element(By.CSS_SELECTOR, "#p-%s button.decline" % a2).click()
    _wait_for(browser, "[role=status]", "Declined browser-a2: not one of ours")
    rc, doc, err = _finish(declined)
    assert rc == 11, (doc, err)
    assert doc["error"]["code"] == "declined" and "not one of ours" in doc["error"]["message"]

    # The audit log shows the decisions; logout ends the session.
    browser.find_element(By.LINK_TEXT, "Audit log").click()
    _wait_for(browser, "h1", "Audit log")
    assert "pending_approve" in browser.page_source and "pending_decline" in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "form.logout button").click()
    _wait_for(browser, "[role=status]", "You are logged out")
    browser.get(base + "/pending")
    _wait_for(browser, "h1", "tether")
    assert "/login" in browser.current_url
