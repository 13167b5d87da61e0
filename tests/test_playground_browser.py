"""The playground in a real headless browser (Debian's chromium driven by Playwright): a
person types, clicks and switches user; the real bot answers through the stand-in Slack.

Skipped where chromium or Playwright is missing (a fresh clone); CI installs both. Each test
leaves a screenshot under test-artifacts/.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.playground.dev import PlaygroundServer
from bot.slack.local import LOCAL_CHANNEL
from providers.simulators.server import SimulatorServer
from tests.helpers import FAST_STOPS, clear_of_the_morning_start

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "no chromium on this machine: `apt-get install chromium` to run the browser tests "
        "(CI installs it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="Playwright is not installed: `pip install -e '.[test]'` brings it",
)
Page = sync_api.Page
expect = sync_api.expect

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
WAIT_MS = 15_000
# One poll per provider step (the simulators move every 3 s), so each state shows once.
STEP_STOPS = FAST_STOPS | {"poll_initial": "3s", "poll_max": "3s"}


class Stepper:
    """The bot's sleep between status polls: each one waits until the test lets it through,
    then moves the simulators' clock by the time asked. Nothing waits on the wall clock."""

    def __init__(self, sims: SimulatorServer) -> None:
        self.sims = sims
        self._lock = threading.Lock()
        self._permits = 0
        self._free = False
        self._wakeups: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def sleep(self, seconds: float) -> None:
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with self._lock:
            self._wakeups.append(waiter)
        try:
            while True:
                with self._lock:
                    if self._free or self._permits > 0:
                        self._permits -= 0 if self._free else 1
                        break
                    event.clear()
                await event.wait()
        finally:
            with self._lock:
                self._wakeups.remove(waiter)
        self.sims.hub.clock.advance(seconds)

    def step(self) -> None:
        """Let one poll happen."""
        with self._lock:
            self._permits += 1
        self._wake()

    def run_free(self) -> None:
        """Let every poll happen at once, from now on."""
        with self._lock:
            self._free = True
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            for loop, event in self._wakeups:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(event.set)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def stepper(sims: SimulatorServer) -> Iterator[Stepper]:
    sims.hub.clock.freeze()
    clear_of_the_morning_start(sims)
    stepper = Stepper(sims)
    yield stepper
    stepper.run_free()  # nothing left waiting when the server stops


@pytest.fixture
def served(sims: SimulatorServer, stepper: Stepper) -> Iterator[PlaygroundServer]:
    with PlaygroundServer(sims=sims, stops=STEP_STOPS, sleep=stepper.sleep) as server:
        yield server


@pytest.fixture
def page(
    browser: object, served: PlaygroundServer, request: pytest.FixtureRequest
) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{served.url}/")
    expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible(timeout=WAIT_MS)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"playground-{request.node.name}.png"), full_page=True)
    context.close()
    assert errors == [], f"the page's script failed: {errors}"


def type_command(page: Page, text: str) -> None:
    """Type in the message box and press Enter, as a person does."""
    box = page.get_by_label(re.compile(r"^Message "))
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("", timeout=WAIT_MS)


def be(page: Page, person: str) -> None:
    """Switch user in the picker, by its label (name and role)."""
    page.get_by_label("You are").select_option(label=person)


def public_message(page: Page, text: str) -> object:
    return page.locator("#messages li[data-ephemeral=false]").filter(has_text=text)


def pinned(page: Page, message: object) -> object:
    """The same message whatever it later says: Slack identifies a message by its ts."""
    expect(message).to_be_visible(timeout=WAIT_MS)
    ts = message.get_attribute("data-ts")  # type: ignore[attr-defined]
    return page.locator(f'#messages li[data-ts="{ts}"]')


def test_stop_confirmed_and_watched_to_stopped(page: Page, stepper: Stepper) -> None:
    """`/stop dev-eu`, Confirm: the one public message moves through Qovery's statuses, in
    place, to Stopped."""
    type_command(page, "/stop dev-eu")
    confirmation = page.locator("#messages li[data-ephemeral=true]").filter(has_text="Stop dev-eu?")
    expect(confirmation).to_contain_text("Only visible to you", timeout=WAIT_MS)
    expect(confirmation).to_contain_text("DEPLOYED")
    confirmation.get_by_role("button", name="Confirm stop").click()

    progress = public_message(page, "Stopping dev-eu")
    status = progress.locator(".bk-field").filter(has_text="Status")
    expect(status).to_contain_text("STOP_QUEUED", timeout=WAIT_MS)
    ts = progress.get_attribute("data-ts")
    stepper.step()
    expect(status).to_contain_text("STOPPING", timeout=WAIT_MS)
    stepper.step()
    done = public_message(page, "Stop of dev-eu")
    expect(done).to_contain_text("Stopped in", timeout=WAIT_MS)
    assert done.get_attribute("data-ts") == ts  # the same message, updated in place
    expect(page.locator("#messages li[data-ephemeral=false]")).to_have_count(1)
    expect(page.locator("#resource-rows tr[data-resource=dev-eu]")).to_contain_text(
        "STOPPED", timeout=WAIT_MS
    )


def test_locked_resource_is_refused(page: Page) -> None:
    """A lock Alice holds refuses Dana's stop: the sample Qovery lock, and one set from the
    panel."""
    type_command(page, "/stop staging-us")
    expect(page.locator("#messages")).to_contain_text(
        "Refused: staging-us is locked in qovery by Alice Martin (load test until Friday)",
        timeout=WAIT_MS,
    )
    page.get_by_label("Resource", exact=True).select_option("dev-eu")
    page.get_by_label("Lock it as").select_option(label="Alice Martin")
    page.get_by_role("button", name="Lock", exact=True).click()
    expect(page.locator("#resource-rows tr[data-resource=dev-eu]")).to_contain_text(
        "locked by Alice Martin", timeout=WAIT_MS
    )
    type_command(page, "/stop dev-eu")
    expect(page.locator("#messages")).to_contain_text(
        "Refused: dev-eu is locked in qovery by Alice Martin (held from the playground)",
        timeout=WAIT_MS,
    )
    expect(page.get_by_role("button", name="Confirm stop")).to_have_count(0)


def test_approver_approves_and_the_stop_follows(page: Page, stepper: Stepper) -> None:
    """spark needs Priya's approval: after Dana confirms, Priya clicks Approve in the channel
    and the progress message follows to Stopped; Dana is told by DM."""
    stepper.run_free()
    type_command(page, "/stop spark")
    page.get_by_role("button", name="Confirm stop").click(timeout=WAIT_MS)
    request = pinned(page, public_message(page, "Approve stopping spark?"))

    be(page, "Priya Patel (approver)")
    request.get_by_role("button", name="Approve").click()
    expect(public_message(page, "Stop of spark")).to_contain_text("Stopped in", timeout=WAIT_MS)
    expect(request).to_contain_text("Approved by @Priya Patel")

    be(page, "Dana Developer (developer)")
    dm = page.get_by_role("navigation", name="Conversations").get_by_role(
        "button", name=re.compile("^Stopbot")
    )
    dm.click()
    expect(page.locator("#messages")).to_contain_text(
        "Your request to stop spark was approved by @Priya Patel", timeout=WAIT_MS
    )


def test_deny_with_a_reason_in_the_modal(page: Page) -> None:
    """Deny opens the bot's modal; the reason typed there reaches the requester."""
    type_command(page, "/stop spark")
    page.get_by_role("button", name="Confirm stop").click(timeout=WAIT_MS)
    request = pinned(page, public_message(page, "Approve stopping spark?"))
    be(page, "Priya Patel (approver)")
    request.get_by_role("button", name="Deny").click(timeout=WAIT_MS)

    modal = page.get_by_role("dialog", name="Deny the stop")
    expect(modal).to_be_visible(timeout=WAIT_MS)
    modal.get_by_label("Reason (the requester will see it) (optional)").fill(
        "batch job still running"
    )
    # Red, as the Deny button that opened it (Slack's danger style), never green.
    red = "rgb(180, 32, 45)"
    expect(request.get_by_role("button", name="Deny")).to_have_css("background-color", red)
    expect(modal.get_by_role("button", name="Deny")).to_have_css("background-color", red)
    modal.get_by_role("button", name="Deny").click()
    expect(modal).to_be_hidden(timeout=WAIT_MS)
    expect(request).to_contain_text(
        "Denied by @Priya Patel: batch job still running", timeout=WAIT_MS
    )


def test_injected_fault_fails_the_stop(page: Page, stepper: Stepper) -> None:
    """An HTTP 500 injected from the panel on the stop request ends the stop as Failed, with
    the provider's words in the channel."""
    stepper.run_free()
    page.get_by_label("Resource", exact=True).select_option("dev-eu")
    page.get_by_label("Fault", exact=True).select_option("http_500")
    page.get_by_label("keep failing until cleared").check()
    page.get_by_role("button", name="Inject fault").click()
    expect(page.locator("#fault-list")).to_contain_text(
        "dev-eu: HTTP 500 on the stop request, until cleared", timeout=WAIT_MS
    )
    type_command(page, "/stop dev-eu")
    page.get_by_role("button", name="Confirm stop").click(timeout=WAIT_MS)
    expect(public_message(page, "Stop of dev-eu")).to_contain_text(
        "Failed: qovery: the provider failed on its side (internal error) (HTTP 500): "
        "fault injected from the playground",
        timeout=WAIT_MS,
    )


CONFIRMED_BUTTON = {
    "type": "actions",
    "block_id": "careful",
    "elements": [
        {
            "type": "button",
            "action_id": "careful_action",
            "value": "v1",
            "style": "danger",
            "text": {"type": "plain_text", "text": "Stop everything"},
            "confirm": {
                "title": {"type": "plain_text", "text": "Really stop everything?"},
                "text": {"type": "mrkdwn", "text": "Every *dev* cluster goes down."},
                "confirm": {"type": "plain_text", "text": "Stop them"},
                "deny": {"type": "plain_text", "text": "Keep them running"},
                "style": "danger",
            },
        }
    ],
}


def test_confirm_dialog_asks_before_the_click_is_sent(page: Page, served: PlaygroundServer) -> None:
    """A button with a confirm object asks first, as Slack does: denying sends nothing,
    confirming sends the click."""
    playground = served.playground
    clicks: list[str] = []

    @playground.bot.app.action("careful_action")
    async def careful(ack: Any, body: dict[str, Any]) -> None:
        clicks.append(body["actions"][0]["value"])
        await ack()

    posted = httpx.post(
        f"{playground.local.api_url}chat.postMessage",
        headers={"Authorization": f"Bearer {playground.local.token}"},
        json={"channel": LOCAL_CHANNEL.id, "text": "Careful", "blocks": [CONFIRMED_BUTTON]},
    )
    assert posted.json()["ok"] is True
    button = page.get_by_role("button", name="Stop everything")
    button.click(timeout=WAIT_MS)
    dialog = page.get_by_role("dialog", name="Really stop everything?")
    expect(dialog).to_contain_text("Every dev cluster goes down.")
    expect(dialog.locator("strong")).to_have_text("dev")
    dialog.get_by_role("button", name="Keep them running").click()
    expect(dialog).to_be_hidden()
    assert playground.state()["deliveries"] == []

    button.click()
    dialog.get_by_role("button", name="Stop them").click()
    expect(page.locator("#delivery-list")).to_contain_text("Stop everything", timeout=WAIT_MS)
    assert clicks == ["v1"]


def test_choosing_in_a_menu_reaches_the_bot(page: Page, served: PlaygroundServer) -> None:
    """A static_select (the Keep menu of schedule warnings) is a menu in the page; choosing
    an option sends it to the bot, whose answer shows (no schedule by that name here)."""
    playground = served.playground
    value = json.dumps({"s": "nightly", "r": "dev-eu", "d": "1h"})
    menu = {
        "type": "static_select",
        "action_id": "schedule_keep:dev-eu",
        "placeholder": {"type": "plain_text", "text": "Keep dev-eu"},
        "options": [
            {"text": {"type": "plain_text", "text": "Keep dev-eu for 1 hour"}, "value": value}
        ],
    }
    posted = httpx.post(
        f"{playground.local.api_url}chat.postMessage",
        headers={"Authorization": f"Bearer {playground.local.token}"},
        json={
            "channel": LOCAL_CHANNEL.id,
            "text": "Tonight's stops",
            "blocks": [{"type": "actions", "elements": [menu]}],
        },
    )
    assert posted.json()["ok"] is True
    page.get_by_label("Keep dev-eu").select_option(label="Keep dev-eu for 1 hour", timeout=WAIT_MS)
    expect(page.locator("#messages")).to_contain_text(
        "No schedule named nightly (known: office-hours).", timeout=WAIT_MS
    )
    expect(page.locator("#delivery-list")).to_contain_text("Keep dev-eu for 1 hour")


def test_mrkdwn_renders_formatting_and_never_markup(page: Page) -> None:
    """mrkdwn becomes bold, italics, code, mentions, dates and links; anything that looks like
    HTML stays text, and snake_case stays as written."""
    html = page.evaluate(
        """text => BlockKit.mrkdwn(text, {users: {U0LOCALAPV: "Priya Patel"}, tz: "UTC"}).innerHTML""",
        "*Stopped* _now_ ~never~ `stop_confirm` by <@U0LOCALAPV> :white_check_mark: "
        "<https://example.com/x?a=1&amp;b=2|the docs> at <!date^0^{date_num} {time}|epoch> "
        "snake_case_name <script>alert(1)</script> &lt;b&gt; <javascript:alert(1)|click>",
    )
    assert html == (
        "<strong>Stopped</strong> <em>now</em> <s>never</s> <code>stop_confirm</code> by "
        '<span class="mention" title="U0LOCALAPV">@Priya Patel</span> \u2705 '
        '<a href="https://example.com/x?a=1&amp;b=2" target="_blank" '
        'rel="noopener noreferrer">the docs</a> at '
        '<time datetime="1970-01-01T00:00:00.000Z" title="epoch">1970-01-01 12:00 AM</time> '
        "snake_case_name &lt;script&gt;alert(1)&lt;/script&gt; &lt;b&gt; "
        "&lt;javascript:alert(1)|click&gt;"
    )


def test_a_phone_wide_page_never_scrolls_sideways(
    browser: object, served: PlaygroundServer
) -> None:
    """At 390 px wide (a phone), with a stop preview and its long ids shown, the page is no
    wider than the screen."""
    context = browser.new_context(viewport={"width": 390, "height": 844})  # type: ignore[attr-defined]
    page = context.new_page()
    try:
        page.goto(f"{served.url}/")
        expect(page.get_by_role("status").filter(has_text="Live")).to_be_visible(timeout=WAIT_MS)
        type_command(page, "/stop dev-eu")
        expect(page.locator("#messages")).to_contain_text("Stop dev-eu?", timeout=WAIT_MS)
        type_command(page, "/stop list")
        expect(page.locator("#messages")).to_contain_text("11 resources", timeout=WAIT_MS)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "playground-390px.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide at 390 px"
    finally:
        context.close()


def test_a_message_arriving_below_the_fold_is_scrolled_into_view(
    page: Page, served: PlaygroundServer
) -> None:
    """Scrolled up in a long channel, a new message is brought into view when it arrives."""
    for n in range(25):
        served.playground.slack.add_message(LOCAL_CHANNEL.id, f"filler {n}", user="U0LOCALAPP")
    expect(page.locator("#messages")).to_contain_text("filler 24", timeout=WAIT_MS)
    page.evaluate("document.getElementById('messages').scrollTop = 0")
    served.playground.slack.add_message(LOCAL_CHANNEL.id, "the newest one", user="U0LOCALAPP")
    newest = page.locator("#messages li").filter(has_text="the newest one")
    expect(newest).to_be_in_viewport(timeout=WAIT_MS)


def test_start_and_reset_from_the_side_panel(page: Page, served: PlaygroundServer) -> None:
    """A stopped resource gets a Start button that brings it back; Reset the estate puts
    every resource, lock and fault back as at the start."""
    sims = served.playground.sims
    dev_eu = served.playground.config.resource("dev-eu")
    sims.hub["qovery"].set_state(dev_eu.id, "STOPPED")
    row = page.locator("#resource-rows tr[data-resource=dev-eu]")
    expect(row).to_contain_text("STOPPED", timeout=WAIT_MS)
    row.get_by_role("button", name="Start dev-eu").click()
    expect(row).to_contain_text("DEPLOYED", timeout=WAIT_MS)
    expect(row.get_by_role("button", name="Start dev-eu")).to_have_count(0)

    page.get_by_label("Resource", exact=True).select_option("web-1")
    page.get_by_role("button", name="Lock", exact=True).click()
    page.get_by_role("button", name="Inject fault").click()
    web = page.locator("#resource-rows tr[data-resource=web-1]")
    expect(web).to_contain_text("nova: locked", timeout=WAIT_MS)
    expect(page.locator("#fault-list")).to_contain_text("web-1", timeout=WAIT_MS)
    sims.hub["qovery"].set_state(dev_eu.id, "STOPPED")
    page.get_by_role("button", name="Reset the estate").click()
    expect(web).to_contain_text("none", timeout=WAIT_MS)
    expect(page.locator("#fault-list")).to_contain_text("None", timeout=WAIT_MS)
    expect(row).to_contain_text("DEPLOYED", timeout=WAIT_MS)


def test_the_home_tab_shows_dana_s_world(page: Page) -> None:
    """Home (under Stopbot app) opens the Home tab the bot publishes: Dana's stop of qa-old there, and
    back to the channel the conversation is shown again."""
    type_command(page, "/stop qa-old")
    expect(page.locator("#messages")).to_contain_text("qa-old", timeout=WAIT_MS)
    page.get_by_role("button", name="Home", exact=True).click()
    home = page.locator("#home-pane")
    expect(home).to_be_visible()
    expect(home).to_contain_text("Your Stopbot", timeout=WAIT_MS)
    expect(home).to_contain_text("What you asked to stop")
    expect(home).to_contain_text("qa-old")
    expect(page.locator("#composer-form")).to_be_hidden()
    page.locator("#channel-list button").first.click()
    expect(home).to_be_hidden()
    expect(page.locator("#composer-form")).to_be_visible()
