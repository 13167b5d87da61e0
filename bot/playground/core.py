"""The playground's engine: the real bot, the simulators and a stand-in Slack, in one process.

The page never talks to the bot directly. It tells the playground what a person did ("Dana
typed `/stop dev-eu` in #platform-team", "Priya clicked Approve"), and the playground does
what Slack would: it builds Slack's own request (slash command, ``block_actions``,
``view_submission``), signs it with the app's signing secret, POSTs it to the bot's
``/slack/events`` and shows the answer. The bot's Web API calls land in the stand-in
(``FakeSlack``), whose state the page renders. Nothing here reaches a real cloud or a real
Slack: the configuration is the embedded estate (:mod:`bot.estate`) on the built-in
simulators, with a configuration file's other keys (schedules, rights) laid over it; a
file that names providers of its own is refused.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Literal

import httpx

from bot.config import ConfigError, ResourceConfig, StopbotConfig, parse_config
from bot.estate import embedded_document, over_estate
from bot.runtime import uses_estate
from bot.slack.app import SlackBot
from bot.slack.fake_api import (
    FakeSlack,
    SlackUser,
    app_home_opened_body,
    block_actions_body,
    block_actions_payload,
    sign_request,
    slash_command_body,
    view_block_actions_payload,
    view_closed_payload,
    view_submission_payload,
)
from bot.slack.local import LOCAL_CHANNEL, LOCAL_ROLES, LOCAL_USERS, LocalSlack
from bot.slack.wording import escape
from bot.stopbot import Stopbot
from bot.store import Store, open_store
from providers.base import Provider
from providers.registry import build_provider, kind_of
from providers.simulators.common import Fault, SimulatedLock, Simulator
from providers.simulators.server import SimulatorServer

__all__ = ["ACK_TIMEOUT", "FAULT_KINDS", "FaultKind", "Playground", "PlaygroundError", "dumps"]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

ACK_TIMEOUT = 3.0
"""Slack waits this long for an app's answer, then tells the user ``operation_timeout``."""
COMMAND = "/stop"
MAX_SKIP_SECONDS = 24 * 3600
LOCK_REASON = "held from the playground"

FaultKind = Literal["http_500", "http_503", "http_429", "slow", "drop"]
FAULT_KINDS: dict[str, dict[str, Any]] = {
    "http_500": {"kind": "status", "status": 500},
    "http_503": {"kind": "status", "status": 503, "retry_after": 1.0},
    "http_429": {"kind": "status", "status": 429, "retry_after": 1.0},
    "slow": {"kind": "latency", "seconds": 5.0},
    "drop": {"kind": "drop"},
}
"""What the faults panel offers, as the simulators' ``Fault`` fields."""
FAULT_BODY = {"message": "fault injected from the playground"}


FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


class PlaygroundError(ValueError):
    """Something the page asked that cannot be done; the message says what to do instead."""


class Playground:
    """The bot, its store and providers, the simulators and the stand-in Slack, wired up.

    Build it with :meth:`start`, serve :func:`bot.playground.web.build_app` on a loopback
    port, set :attr:`bot_url` to where it is served, and :meth:`close` it at the end.
    """

    def __init__(
        self,
        *,
        sims: SimulatorServer,
        local: LocalSlack,
        config: StopbotConfig,
        store: Store,
        providers: dict[str, Provider],
        stopbot: Stopbot,
        bot: SlackBot,
        owns_sims: bool,
        temp_dir: TemporaryDirectory[str] | None,
        started: dt.datetime,
    ) -> None:
        self.sims = sims
        self.local = local
        self.config = config
        self.store = store
        self.providers = providers
        self.stopbot = stopbot
        self.bot = bot
        self.bot_url = ""
        """Where the bot's ``/slack/events`` is served (the playground's own base URL)."""
        self._owns_sims = owns_sims
        self._temp_dir = temp_dir
        self._view_errors: dict[str, dict[str, str]] = {}
        self._deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=50)
        self._skipped = 0.0
        self.started = started
        """When the playground started (on its clock): it places the sample schedule."""

    @classmethod
    def start(
        cls,
        *,
        db_path: str | Path | None = None,
        sims: SimulatorServer | None = None,
        stops: Mapping[str, Any] | None = None,
        sleep: Sleep = asyncio.sleep,
        file_document: Any = None,
        source: str = "<playground>",
    ) -> Playground:
        """Start the simulators (unless given) and the stand-in Slack, and build the bot.

        :param db_path: the store's location (``stopbot dev`` passes the bot's database, kept
            between runs); by default a fresh SQLite file in a temporary folder (tests).
        :param stops: overrides of the ``stops`` settings (tests follow stops faster).
        :param sleep: how the bot waits between status polls (tests pass a movable clock's).
        :param file_document: a configuration file's document, laid over the embedded estate
            (``source`` names it in errors); one that names providers is refused.
        """
        if not uses_estate(file_document):
            raise ConfigError(
                source,
                [
                    (
                        "providers",
                        "the playground runs on the built-in simulators only: leave providers: "
                        "out of this file (the simulators' are filled in), or run `stopbot "
                        "serve` with Slack credentials for real providers",
                    )
                ],
            )
        owns_sims = sims is None
        if sims is None:
            sims = SimulatorServer()
            sims.start()
        temp_dir = None
        local = None
        try:
            local = LocalSlack.start()
            if db_path is None:
                temp_dir = TemporaryDirectory(prefix="stopbot-dev-")
                db_path = Path(temp_dir.name) / "stopbot.db"
            hub_clock = sims.hub.clock

            # The bot reads the simulators' clock, so "skip ahead" moves both together.
            def clock() -> dt.datetime:
                return dt.datetime.fromtimestamp(hub_clock.now(), dt.UTC)

            started = clock()
            document = over_estate(embedded_document(sims.base_url, started), file_document)
            if stops:
                document["stops"] = {**document.get("stops", {}), **dict(stops)}
            config = parse_config(document, source, env=None if file_document else {})

            store = open_store(db_path, clock=clock)
            providers = {p.name: build_provider(p, http=config.http) for p in config.providers}
            stopbot = Stopbot(config, store, providers, clock=clock, sleep=sleep)
            bot = SlackBot(
                stopbot,
                token=local.token,
                signing_secret=local.signing_secret,
                api_url=local.api_url,
            )
        except BaseException:
            if local is not None:
                local.stop()
            if owns_sims:
                sims.stop()
            if temp_dir is not None:
                temp_dir.cleanup()
            raise
        return cls(
            sims=sims,
            local=local,
            config=config,
            store=store,
            providers=providers,
            stopbot=stopbot,
            bot=bot,
            owns_sims=owns_sims,
            temp_dir=temp_dir,
            started=started,
        )

    @property
    def slack(self) -> FakeSlack:
        return self.local.slack

    @property
    def db_path(self) -> str:
        return self.store.location

    async def aclose(self) -> None:
        """Close the provider clients (on the loop that used them)."""
        for provider in self.providers.values():
            await provider.aclose()

    def close(self) -> None:
        """Stop the stand-in Slack and the simulators, close the store, drop the temp files."""
        self.store.close()
        self.local.stop()
        if self._owns_sims:
            self.sims.stop()
        if self._temp_dir is not None:
            self._temp_dir.cleanup()

    # -- what a person does in the page -----------------------------------------------------

    async def type_message(self, user: str, channel: str, text: str) -> None:
        """``user`` sends ``text`` in ``channel``: a slash command goes to the bot, as Slack
        sends it; anything else is an ordinary message in the channel."""
        self._check_user(user)
        self._check_channel(user, channel)
        text = text.strip()
        if not text:
            raise PlaygroundError("Type a message, or a command such as `/stop dev-eu`.")
        if not text.startswith("/"):
            self.slack.add_message(channel, text, user=user)
            return
        command, _, args = text.partition(" ")
        self.slack.add_ephemeral(channel, user, text, author=user)
        if command != COMMAND:
            self.slack.add_ephemeral(
                channel,
                user,
                f"`{command}` is not a valid command. The only app in this workspace is "
                f"Stopbot, whose command is `{COMMAND}`: try `{COMMAND} help`.",
            )
            return
        response_url = self.slack.new_response_url(channel=channel, user=user)
        body = slash_command_body(
            COMMAND,
            escape(args.strip()),  # as Slack sends a command's text
            user,
            channel,
            response_url,
            self.slack.new_trigger_id(user),
            team_id=self.slack.team_id,
            team_domain=self.slack.team_domain,
            channel_name=self._channel_name(channel),
            user_name=self._user_name(user),
        )
        answer = await self._deliver(body, "slash_command", user, f"{COMMAND} {args.strip()}")
        if isinstance(answer, str):
            self.slack.add_ephemeral(
                channel, user, f'`{COMMAND}` failed with the error "{answer}".'
            )
            return
        reply = _json_body(answer)
        if reply and any(reply.get(key) for key in ("text", "blocks", "attachments")):
            try:
                self.slack.show_reply(channel, user, reply)
            except ValueError as exc:
                log.warning("the bot acknowledged with a reply Slack would refuse: %s", exc)

    async def click(
        self,
        user: str,
        channel: str,
        message_ts: str,
        *,
        block: int,
        element: int | None,
        ephemeral: bool,
        option: str | None = None,
    ) -> None:
        """``user`` clicks a button of a message, or chooses ``option`` (its value) in a
        menu (``static_select``): a ``block_actions`` request, as Slack sends.

        :param block: the index of the button's block in the message.
        :param element: its index in an ``actions`` block; None for a section's accessory.
        """
        self._check_user(user)
        self._check_channel(user, channel)
        messages = (
            self.slack.ephemeral_messages(channel, user)
            if ephemeral
            else self.slack.messages(channel)
        )
        message = next((m for m in messages if m["ts"] == message_ts), None)
        if message is None:
            raise PlaygroundError(
                "That message is gone (deleted or replaced); nothing was sent to the bot."
            )
        button, block_id = _button(message.get("blocks") or [], block, element)
        chosen = _chosen_option(button, option)
        response_url = self.slack.new_response_url(
            channel=channel, user=user, message_ts=message_ts, is_ephemeral=ephemeral
        )
        payload = block_actions_payload(
            user,
            channel,
            str(button.get("action_id", "")),
            str(button.get("value", "")),
            response_url=response_url,
            message_ts=message_ts,
            message=message,
            is_ephemeral=ephemeral,
            block_id=block_id,
            button_text=_plain(button.get("text")),
            channel_name=self._channel_name(channel),
            **self._actor_fields(user),
        )
        if chosen is not None:  # a menu's action: what was chosen, no value nor text
            clicked = payload["actions"][0]
            payload["actions"][0] = {
                "type": "static_select",
                "action_id": clicked["action_id"],
                "block_id": block_id,
                "selected_option": chosen,
                "placeholder": button.get("placeholder"),
                "action_ts": clicked["action_ts"],
            }
        label = _plain(chosen["text"]) if chosen is not None else _plain(button.get("text"))
        answer = await self._deliver(block_actions_body(payload), "block_actions", user, label)
        if isinstance(answer, str):
            self.slack.add_ephemeral(
                channel,
                user,
                f"Stopbot did not answer your click on “{_plain(button.get('text'))}” "
                f'(error "{answer}"). Nothing tells whether it acted: check with '
                f"`{COMMAND} status`.",
            )

    async def click_in_view(
        self, user: str, view_id: str, *, block: int, element: int | None
    ) -> None:
        """``user`` clicks a button inside a modal."""
        view = self._open_view(user, view_id)
        button, block_id = _button(view.get("blocks") or [], block, element)
        payload = view_block_actions_payload(
            user,
            view,
            str(button.get("action_id", "")),
            str(button.get("value", "")),
            block_id=block_id,
            button_text=_plain(button.get("text")),
            **self._actor_fields(user),
        )
        answer = await self._deliver(
            block_actions_body(payload), "block_actions", user, _plain(button.get("text"))
        )
        if isinstance(answer, str):
            self._view_errors[view_id] = {"": _trouble(answer)}
            self.slack.notify()

    async def open_home(self, user: str) -> None:
        """``user`` opens Stopbot's Home tab: ``app_home_opened``, as Slack sends it; the
        bot publishes the Home (``views.publish``), which the page shows."""
        self._check_user(user)
        body = app_home_opened_body(user, team_id=self.slack.team_id)
        answer = await self._deliver(body, "app_home_opened", user, "Home", media_type=JSON)
        if isinstance(answer, str):
            raise PlaygroundError(f'Stopbot did not answer the Home tab (error "{answer}").')

    async def click_in_home(self, user: str, *, block: int, element: int | None) -> None:
        """``user`` clicks a button on their Home tab: the bot publishes it again."""
        self._check_user(user)
        view = self.slack.home(user)
        if view is None:
            raise PlaygroundError("Open the Home tab first: nothing is published there yet.")
        button, block_id = _button(view.get("blocks") or [], block, element)
        payload = view_block_actions_payload(
            user,
            view,
            str(button.get("action_id", "")),
            str(button.get("value", "")),
            block_id=block_id,
            button_text=_plain(button.get("text")),
            **self._actor_fields(user),
        )
        label = _plain(button.get("text"))
        answer = await self._deliver(block_actions_body(payload), "block_actions", user, label)
        if isinstance(answer, str):
            raise PlaygroundError(
                f'Stopbot did not answer your click on “{label}” (error "{answer}"): check '
                "with `/stop status`."
            )

    async def submit_view(self, user: str, view_id: str, values: Mapping[str, Any]) -> None:
        """``user`` submits a modal with what they entered: ``{block_id: {action_id: value}}``,
        a value being text, an option's value, or a list of them (checkboxes)."""
        view = self._open_view(user, view_id)
        state, missing = _state_values(view, values)
        if missing:
            self._view_errors[view_id] = missing
            self.slack.notify()
            return
        self.slack.set_view_state(view_id, state)
        payload = view_submission_payload(
            user,
            view,
            state,
            **self._actor_fields(user),
        )
        title = _plain(view.get("title"))
        answer = await self._deliver(block_actions_body(payload), "view_submission", user, title)
        self._view_errors.pop(view_id, None)
        if isinstance(answer, str):
            self._view_errors[view_id] = {"": _trouble(answer)}
            self.slack.notify()
            return
        self._apply_view_answer(user, view_id, _json_body(answer))

    async def close_view(self, user: str, view_id: str) -> None:
        """``user`` closes a modal; the bot hears of it if it asked (``notify_on_close``)."""
        view = self._open_view(user, view_id)
        self.slack.close_view(view_id)
        self._view_errors.pop(view_id, None)
        if view.get("notify_on_close"):
            payload = view_closed_payload(
                user,
                view,
                **self._actor_fields(user, trigger=False),
            )
            await self._deliver(
                block_actions_body(payload), "view_closed", user, _plain(view.get("title"))
            )

    def _apply_view_answer(self, user: str, view_id: str, answer: dict[str, Any] | None) -> None:
        """What Slack does with the app's answer to a submission.

        https://docs.slack.dev/surfaces/modals#updating_response
        """
        action = (answer or {}).get("response_action")
        try:
            if action == "errors":
                errors = answer.get("errors") if answer else None
                self._view_errors[view_id] = {
                    str(k): str(v) for k, v in (errors if isinstance(errors, dict) else {}).items()
                }
            elif action == "update":
                self.slack.update_view(view_id, _view_of(answer))
            elif action == "push":
                self.slack.push_view(user, _view_of(answer), view_id)
            elif action == "clear":
                self.slack.close_views(user)
            else:
                self.slack.close_view(view_id)
        except ValueError as exc:
            self._view_errors[view_id] = {"": f"Stopbot answered with a bad view ({exc})."}
        self.slack.notify()

    # -- the side panel -----------------------------------------------------------------------

    def inject_fault(
        self, resource: str, kind: FaultKind, *, stop_only: bool, repeat: bool
    ) -> Fault:
        """Make the simulator answer requests about ``resource`` with a fault.

        :param stop_only: only the stop request (a POST), not status reads.
        :param repeat: every matching request until cleared, instead of the next one only.
        """
        rc = self._resource(resource)
        fields = dict(FAULT_KINDS[kind])
        if fields["kind"] == "status":
            fields["body"] = FAULT_BODY
        fault = Fault(
            api=self._simulator(rc.provider),
            method="POST" if stop_only else None,
            path_contains=rc.id,
            count=None if repeat else 1,
            **fields,
        )
        self.sims.hub.faults.add(fault)
        self.slack.notify()
        return fault

    def clear_faults(self) -> None:
        self.sims.hub.faults.clear()
        self.slack.notify()

    def lock(self, resource: str, owner: str) -> str:
        """Lock ``resource`` as ``owner`` would, where its provider can (a Qovery cluster
        lock in their name, a Nova server lock), elsewhere a Stopbot lock. Returns which:
        the simulator's name, or ``stopbot``."""
        rc = self._resource(resource)
        user = self._check_user(owner)
        simulator = self._simulator_of(rc)
        if simulator.has_locks:
            simulator.set_lock(
                rc.id,
                owner=user.real_name or user.name,
                reason=LOCK_REASON,
                ttl=dt.timedelta(days=1),
            )
            kind = simulator.name
        else:
            expires = self.stopbot.clock() + dt.timedelta(hours=1)
            self.store.set_lock(rc.name, owner, expires, LOCK_REASON)
            kind = "stopbot"
        self.slack.notify()
        return kind

    def unlock(self, resource: str) -> None:
        """Remove every lock on ``resource``: the provider's and Stopbot's."""
        rc = self._resource(resource)
        self._simulator_of(rc).clear_lock(rc.id)
        self.store.delete_lock(rc.name, "playground", forced=True)
        self.slack.notify()

    def start_resource(self, resource: str) -> None:
        """Start ``resource`` as someone would in the provider's console (the simulator's
        control, not a provider start call): running again, to be stopped again."""
        rc = self._resource(resource)
        found = rc.to_resource()
        self._simulator_of(rc).start(found.id, options=found.options)
        self.slack.notify()

    def reset_estate(self) -> None:
        """Every resource back as the sample estate starts (running, the sample locks),
        the faults cleared and Stopbot's locks removed. The clock, the channel and the
        history stay: what happened is still there to read."""
        hub = self.sims.hub
        hub.faults.clear()
        hub.seed(hub.initial_seed)
        for rc in self.config.resources:
            if self.store.get_lock(rc.name) is not None:
                self.store.delete_lock(rc.name, "playground", forced=True)
        self.slack.notify()

    def skip_ahead(self, seconds: float) -> None:
        """Move the simulators' and the bot's clock (confirmations expire, locks lapse,
        scheduled warnings and runs fall due: the scheduler wakes at once)."""
        if not 0 < seconds <= MAX_SKIP_SECONDS:
            raise PlaygroundError(f"Skip between 1 second and {MAX_SKIP_SECONDS} seconds.")
        self.sims.hub.clock.advance(seconds)
        self._skipped += seconds
        self.stopbot.clock_moved()  # schedules and housekeeping follow the same clock
        self.slack.notify()

    # -- what the page shows ---------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the page renders, as JSON."""
        slack = self.slack.snapshot()
        slack.pop("version")
        for entry in slack["views"]:
            entry["errors"] = self._view_errors.get(entry["view"]["id"], {})
        roles = dict(LOCAL_ROLES)
        return {
            "slack": slack,
            "people": [
                {"id": u.id, "name": u.real_name or u.name, "role": roles.get(u.id, ""), "tz": u.tz}
                for u in LOCAL_USERS
            ],
            "home_channel": LOCAL_CHANNEL.id,
            "resources": self.resources(),
            "faults": self._faults(),
            "deliveries": list(self._deliveries),
            "clock_offset": self._skipped,
        }

    def resources(self) -> list[dict[str, Any]]:
        """Every configured resource with its simulated status and locks."""
        rows = []
        for rc in self.config.resources:
            resource = rc.to_resource()
            found = self._simulator_of(rc).describe(resource.id, options=resource.options)
            bot_lock = self.store.get_lock(rc.name)
            approval = self.config.approval_for(rc.name)
            rows.append(
                {
                    "name": rc.name,
                    "provider": rc.provider,
                    "id": rc.id,
                    "status": found.status if found else "missing",
                    "settled": found.settled if found else True,
                    "provider_lock": _lock_words(found.lock) if found and found.lock else None,
                    "bot_lock": (
                        {
                            "owner": bot_lock.owner,
                            "reason": bot_lock.reason,
                            "expires_at": bot_lock.expires_at.isoformat(),
                        }
                        if bot_lock
                        else None
                    ),
                    "approvers": list(approval.approvers) if approval else [],
                    "startable": bool(
                        found
                        and found.settled
                        and found.status != self._simulator_of(rc).running_state
                    ),
                }
            )
        return rows

    def _faults(self) -> list[dict[str, Any]]:
        names = {(self._simulator(r.provider), r.id): r.name for r in self.config.resources}
        listing = []
        for fault in self.sims.hub.faults.listing():
            resource = names.get((fault["api"], fault.get("path_contains") or ""))
            listing.append(fault | {"resource": resource})
        return listing

    # -- plumbing ------------------------------------------------------------------------

    async def _deliver(
        self, body: bytes, kind: str, user: str, summary: str, *, media_type: str = FORM
    ) -> httpx.Response | str:
        """POST a signed request to the bot; its HTTP response, or Slack's error name for
        a failed delivery (``dispatch_failed``, ``operation_timeout``)."""
        if not self.bot_url:
            raise RuntimeError("the playground is not served yet: set bot_url")
        headers = sign_request(self.local.signing_secret, body, int(time.time()))
        headers["Content-Type"] = media_type
        outcome: httpx.Response | str
        try:
            async with httpx.AsyncClient(timeout=ACK_TIMEOUT) as client:
                outcome = await client.post(
                    f"{self.bot_url}/slack/events", content=body, headers=headers
                )
        except httpx.TimeoutException:
            outcome = "operation_timeout"
        except httpx.HTTPError:
            outcome = "dispatch_failed"
        status = outcome.status_code if isinstance(outcome, httpx.Response) else None
        if status is not None and status != 200:
            log.warning("the bot answered a %s with HTTP %d", kind, status)
            outcome = "dispatch_failed"
        self._deliveries.append(
            {
                "kind": kind,
                "user": user,
                "summary": summary,
                "at": time.time(),
                "status": status,
                "error": outcome if isinstance(outcome, str) else None,
            }
        )
        self.slack.notify()
        return outcome

    def _actor_fields(self, user: str, *, trigger: bool = True) -> dict[str, Any]:
        """What Slack fills in about who acted, and where, in every payload; with a fresh
        trigger_id for interactions that may open a modal."""
        fields: dict[str, Any] = {
            "user_name": self._user_name(user),
            "team_id": self.slack.team_id,
            "team_domain": self.slack.team_domain,
            "api_app_id": self.slack.app_id,
        }
        if trigger:
            fields["trigger_id"] = self.slack.new_trigger_id(user)
        return fields

    def _check_user(self, user_id: str) -> SlackUser:
        user = next((u for u in LOCAL_USERS if u.id == user_id), None)
        if user is None:
            known = ", ".join(u.id for u in LOCAL_USERS)
            raise PlaygroundError(f"No user {user_id!r} in the playground (known: {known}).")
        return user

    def _check_channel(self, user: str, channel: str) -> None:
        found = next((c for c in self.slack.channels() if c.id == channel), None)
        if found is None or (found.user is not None and found.user != user):
            raise PlaygroundError(
                f"No conversation {channel!r} for this user; pick one from the list."
            )

    def _channel_name(self, channel: str) -> str:
        found = next((c for c in self.slack.channels() if c.id == channel), None)
        if found is None or found.user is not None:
            return "directmessage"
        return found.name

    def _user_name(self, user: str) -> str:
        return str(self._check_user(user).name)

    def _open_view(self, user: str, view_id: str) -> dict[str, Any]:
        self._check_user(user)
        view = next((v for v in self.slack.open_views(user) if v["id"] == view_id), None)
        if view is None:
            raise PlaygroundError("That dialog is closed already; nothing was sent to the bot.")
        return view

    def _resource(self, name: str) -> ResourceConfig:
        try:
            return self.config.resource_config(name)
        except KeyError:
            known = ", ".join(r.name for r in self.config.resources)
            raise PlaygroundError(f"No resource {name!r} (known: {known}).") from None

    def _simulator(self, provider: str) -> str:
        """The name of the simulated API a provider of the configuration talks to."""
        return kind_of(self.config.provider(provider).type).simulator.name

    def _simulator_of(self, rc: ResourceConfig) -> Simulator:
        return self.sims.hub[self._simulator(rc.provider)]


def _json_body(response: httpx.Response) -> dict[str, Any] | None:
    if not response.content:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _view_of(answer: Mapping[str, Any] | None) -> dict[str, Any]:
    view = (answer or {}).get("view")
    if not isinstance(view, dict):
        raise ValueError("invalid_arguments")
    return view


def _trouble(error: str) -> str:
    return f'We had some trouble connecting to Stopbot (error "{error}"). Try again?'


def _plain(text: Any) -> str:
    return str(text.get("text", "")) if isinstance(text, dict) else ""


def _button(
    blocks: list[dict[str, Any]], block: int, element: int | None
) -> tuple[dict[str, Any], str]:
    """The button at a position in ``blocks``, and the block_id Slack reports for it."""
    if not 0 <= block < len(blocks):
        raise PlaygroundError("That button is gone (the message changed); nothing was sent.")
    found = blocks[block]
    if element is None:
        candidate = found.get("accessory")
    else:
        elements = found.get("elements") or []
        candidate = elements[element] if 0 <= element < len(elements) else None
    if not isinstance(candidate, dict) or candidate.get("type") not in {"button", "static_select"}:
        raise PlaygroundError(
            "That is not a button or a menu (the message changed); nothing was sent."
        )
    # Slack gives a block without a block_id one of its own; the index stands in for it.
    return candidate, str(found.get("block_id") or f"b{block}")


def _chosen_option(element: Mapping[str, Any], value: str | None) -> dict[str, Any] | None:
    """The option chosen in a menu (None for a button); an unknown one is refused."""
    if element.get("type") != "static_select":
        return None
    options = [*(element.get("options") or [])]
    for group in element.get("option_groups") or []:
        options.extend(group.get("options") or [])
    for candidate in options:
        if isinstance(candidate, dict) and str(candidate.get("value")) == value:
            return dict(candidate)
    raise PlaygroundError("Choose one of the menu's options; nothing was sent.")


def _state_values(
    view: Mapping[str, Any], entered: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """``view.state.values`` as Slack builds it from the inputs, and the required inputs
    left empty (block_id -> message), which Slack's client refuses to submit."""
    values: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for index, block in enumerate(view.get("blocks") or []):
        if block.get("type") != "input" or not isinstance(block.get("element"), dict):
            continue
        element = block["element"]
        block_id = str(block.get("block_id") or f"b{index}")
        action_id = str(element.get("action_id") or f"a{index}")
        raw = (entered.get(block_id) or {}).get(action_id)
        state, empty = _element_state(element, raw)
        values[block_id] = {action_id: state}
        if empty and not block.get("optional"):
            missing[block_id] = "Please complete this required field."
    return values, missing


def _element_state(element: Mapping[str, Any], raw: Any) -> tuple[dict[str, Any], bool]:
    kind = str(element.get("type"))
    options = {str(o.get("value")): o for o in element.get("options") or []}
    if kind in {"static_select", "radio_buttons"}:
        option = options.get(str(raw)) if raw is not None else None
        return {"type": kind, "selected_option": option}, option is None
    if kind in {"checkboxes", "multi_static_select"}:
        chosen = (
            [options[str(v)] for v in raw if str(v) in options] if isinstance(raw, list) else []
        )
        return {"type": kind, "selected_options": chosen}, not chosen
    text = str(raw) if raw is not None else ""
    if kind in {"datepicker", "timepicker"}:
        key = "selected_date" if kind == "datepicker" else "selected_time"
        return {"type": kind, key: text or None}, not text
    return {"type": kind, "value": text or None}, not text.strip()


def _lock_words(lock: SimulatedLock) -> str:
    """A provider's lock as the panel shows it: who, where the API records it, and why."""
    if lock.owner is not None:
        return (
            f"locked by {lock.owner}: {lock.reason}" if lock.reason else f"locked by {lock.owner}"
        )
    return f"locked: {lock.reason}" if lock.reason else "locked"


def dumps(state: Mapping[str, Any]) -> str:
    """The state as the page receives it (compact JSON)."""
    return json.dumps(state, separators=(",", ":"), sort_keys=True)
