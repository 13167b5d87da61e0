"""The stop workflow end to end against the simulators, with no Slack: one clock, no sleeps."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.cli import words
from bot.models import Actor, OpState
from bot.slack.wording import mrkdwn
from bot.store import background, open_store
from bot.text import Command, Person, Text, say
from bot.workflow import LOCK_READ_REUSE, SUBMIT_MARGIN, StopService
from providers.base import Provider, Resource, ResourceStatus, StopAccepted
from providers.registry import build_provider
from providers.simulators.common import Fault
from providers.simulators.server import SimulatorServer
from tests.helpers import Recorder, SimTime, sample

ALICE = Actor(id="U0ALICE", names=frozenset({"Alice Martin"}))
BOB = Actor(id="U0BOB", names=frozenset({"Bob Stone"}))
ADMIN = Actor(id="U0ADMIN")


class Harness:
    def __init__(self, sims: SimulatorServer, db: Path, **config: object) -> None:
        self.sims = sims
        sims.hub.clock.freeze()
        self.time = SimTime(sims)
        self.config = sample(sims, admins=[ADMIN.id], **config)
        self.store = open_store(db, clock=self.time.now)
        self.providers: dict[str, Provider] = {
            p.name: build_provider(p, http=self.config.http) for p in self.config.providers
        }
        self.service = self.new_service()

    def new_service(self) -> StopService:
        return StopService(
            self.config, self.store, self.providers, clock=self.time.now, sleep=self.time.sleep
        )

    def restart(self) -> StopService:
        """The process dies (its work left where it stands) and a new one starts."""
        self.service.registry.me.abandon()
        self.service = self.new_service()
        return self.service

    async def confirmed(self, resource: str, actor: Actor = BOB, **kw: object) -> str:
        preview = await self.service.prepare(resource, actor, source="test", **kw)  # type: ignore[arg-type]
        assert preview.operation.state == OpState.AWAITING_CONFIRMATION, preview.operation.detail
        result = self.service.confirm(preview.operation.id, actor)
        assert result.ok, result.message
        return preview.operation.id

    async def cut_in_progress(self, op_id: str) -> None:
        """Start the stop and cut it (a process dying) once the provider took it."""
        taken = asyncio.Event()

        class Watch(Recorder):
            async def progress(self, op, timeline, status):  # type: ignore[no-untyped-def]
                if op.state == OpState.IN_PROGRESS:
                    taken.set()

        task = self.service.start(op_id, Watch(), BOB)
        await taken.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        await self.service.aclose()
        for p in self.providers.values():
            await p.aclose()
        self.store.close()


@pytest.fixture
async def h(sims: SimulatorServer, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(sims, tmp_path / "stopbot.db")
    yield harness
    await harness.aclose()


@pytest.mark.parametrize(
    ("resource", "provider_states"),
    [
        ("dev-eu", ["STOP_QUEUED", "STOPPING", "STOPPED"]),
        ("spark", ["started", "stopped"]),
        ("etl", ["Stopping", "Stopped"]),
    ],
)
async def test_stop_followed_through_every_provider_state(
    h: Harness, resource: str, provider_states: list[str]
) -> None:
    """A confirmed stop goes requested → … → stopped, recording each provider state once."""
    op_id = await h.confirmed(resource, force=True)
    listener = Recorder()
    final = await h.service.run(op_id, listener, BOB)
    assert final.state == OpState.STOPPED
    transitions = h.store.transitions(op_id)
    assert [t.state for t in transitions if t.provider_state is None] == [
        "requested",
        "awaiting_confirmation",
        "submitting",
        "accepted",
        "in_progress",
        "stopped",
    ]
    assert [t.provider_state for t in transitions if t.provider_state] == provider_states
    assert listener.states()[-1] == ("stopped", provider_states[-1])
    actions = [e.action for e in h.store.audit_log(resource=resource)]
    assert actions == [
        "stop.requested",
        "stop.awaiting_confirmation",
        "stop.submitting",
        "stop.accepted",
        "stop.in_progress",
        "stop.stopped",
    ]


def spy_on_loop_lane(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Each call queued in the loop's lane from now on, but the outbox's (it delivers the
    progress beside the stop, in tasks of its own), as (its function's name, whether a
    followed stop made it)."""
    seen: list[tuple[str, bool]] = []
    lane = h.store._lanes["loop"]
    submit = lane.submit

    def spy(call: Callable[[], object]) -> object:
        task = asyncio.current_task()
        if task is None or not task.get_name().startswith(("outbox", "deliver-")):
            seen.append((getattr(call, "func", call).__name__, background._FOLLOWING.get()))
        return submit(call)

    monkeypatch.setattr(lane, "submit", spy)
    return seen


async def test_a_stop_s_store_calls_are_a_followers_once_the_provider_has_it(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to the provider's acceptance a stop's store calls go first in the loop's lane;
    from then on they take the room the stops being sent leave (bot/store/background.py)."""
    seen = spy_on_loop_lane(h, monkeypatch)
    op_id = await h.confirmed("dev-eu", force=True)
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.STOPPED
    sent = [name for name, following in seen if not following]
    followed = [name for name, following in seen if following]
    assert sent[-2:] == ["claim_send", "accept"]
    assert followed[0] == "_look" and followed[-1] == "end"


async def test_already_stopped_resource_needs_no_confirmation(h: Harness) -> None:
    """A resource already stopped ends as stopped-already at once, with no buttons to press."""
    preview = await h.service.prepare("qa-old", BOB, source="test")
    assert preview.operation.state == OpState.STOPPED_ALREADY
    assert preview.operation.detail == Text("qa-old is already stopped (STOPPED): nothing to do.")


async def test_foreign_provider_lock_refuses_with_owner_reason_and_expiry(h: Harness) -> None:
    """A live Qovery lock held by someone else refuses the stop, naming owner, reason and expiry."""
    preview = await h.service.prepare("staging-us", BOB, source="test")
    assert preview.operation.state == OpState.REFUSED
    assert preview.operation.detail == Text(
        "staging-us is locked in qovery by Alice Martin (load test until Friday); it expires in 3d."
    )
    assert preview.provider_lock is not None and preview.provider_lock.owner == "Alice Martin"


async def test_advice_names_a_command_each_interface_writes_in_its_own_words(h: Harness) -> None:
    """What to type is a command, not text: the terminal shows it as `stopbot stop …`,
    Slack as `/stop …`, wherever the stop was asked from."""
    preview = await h.service.prepare("staging-us", ADMIN, source="cli", override_lock=True)
    assert preview.operation.state == OpState.REFUSED
    detail = preview.operation.detail
    example = "staging-us --override-lock runaway costs, owner unreachable"
    assert detail == say("--override-lock needs a reason, e.g. {}.", Command("stop", example))
    assert words(detail) == f"--override-lock needs a reason, e.g. `stopbot stop {example}`."
    assert mrkdwn(detail) == f"--override-lock needs a reason, e.g. `/stop {example}`."


async def test_lock_owner_may_stop_own_locked_resource(h: Harness) -> None:
    """The lock's owner (matched by name) may stop the resource they locked."""
    preview = await h.service.prepare("staging-us", ALICE, source="test")
    assert preview.operation.state == OpState.AWAITING_CONFIRMATION
    assert preview.notes == [Text("locked in qovery by you (load test until Friday)")]


async def test_stale_provider_lock_is_noted_and_ignored(h: Harness) -> None:
    """A lock past locked_at + TTL no longer blocks; the preview says it was stale."""
    h.sims.hub.clock.advance(4 * 86400)
    preview = await h.service.prepare("staging-us", BOB, source="test")
    assert preview.operation.state == OpState.AWAITING_CONFIRMATION
    assert preview.notes == [
        Text(
            "the qovery lock by Alice Martin (load test until Friday) expired 1d ago: stale, ignored"
        )
    ]


async def test_bot_lock_by_another_user_refuses(h: Harness) -> None:
    """A bot lock set by someone else blocks the stop until it expires."""
    h.store.set_lock("dev-eu", ALICE.id, h.time.now() + dt.timedelta(hours=2), reason="demo at 3pm")
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    assert preview.operation.state == OpState.REFUSED
    assert preview.operation.detail == say(
        "dev-eu is locked by {} (demo at 3pm); it expires in 2h. Ask them to unlock it.",
        Person("U0ALICE"),
    )


async def test_unauthorised_user_is_refused_and_audited(
    sims: SimulatorServer, tmp_path: Path
) -> None:
    """With allowed_users set, anyone else is refused and the attempt is in the audit log."""
    h = Harness(sims, tmp_path / "db", allowed_users=[ALICE.id])
    try:
        preview = await h.service.prepare("dev-eu", BOB, source="test")
        assert preview.operation.state == OpState.REFUSED
        assert preview.operation.detail == Text(
            "you are not allowed to stop dev-eu (the global rule); ask an admin to add you"
        )
        assert [(e.actor, e.action) for e in h.store.audit_log()] == [
            ("U0BOB", "stop.requested"),
            ("U0BOB", "stop.refused"),
        ]
        allowed = await h.service.prepare("dev-eu", ALICE, source="test")
        assert allowed.operation.state == OpState.AWAITING_CONFIRMATION
    finally:
        await h.aclose()


async def test_confirm_acts_once(h: Harness) -> None:
    """A second confirm, by anyone, changes nothing and says so."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    op_id = preview.operation.id
    assert h.service.confirm(op_id, BOB).ok
    again = h.service.confirm(op_id, BOB)
    assert not again.ok
    assert again.message == Text(
        "This stop of dev-eu was already handled (it is submitting). Nothing was changed."
    )


async def test_only_requester_can_confirm(h: Harness) -> None:
    """Someone else's click is refused and the operation stays pending."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    result = h.service.confirm(preview.operation.id, ALICE)
    assert (result.ok, result.message) == (
        False,
        say("Only {} can confirm this stop of dev-eu.", Person("U0BOB")),
    )
    op = h.store.get_operation(preview.operation.id)
    assert op is not None and op.state == OpState.AWAITING_CONFIRMATION


async def test_expired_confirmation_cancels(h: Harness) -> None:
    """A confirm after the confirmation's lifetime cancels the request instead of stopping."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    h.sims.hub.clock.advance(10 * 60)
    result = h.service.confirm(preview.operation.id, BOB)
    assert (result.ok, result.message) == (
        False,
        say("This confirmation expired. Run {} again.", Command("stop", "dev-eu")),
    )
    assert result.operation is not None and result.operation.state == OpState.CANCELLED
    assert result.operation.detail == Text("the confirmation expired")


async def test_cancel(h: Harness) -> None:
    """Cancel ends the request; nothing is sent to the provider."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    result = h.service.cancel(preview.operation.id, BOB)
    assert (result.ok, result.message) == (True, Text("Cancelled: dev-eu was not stopped."))
    state = await h.providers["qovery"].status(h.config.resource("dev-eu"))
    assert state.state == "DEPLOYED"


async def test_concurrent_confirms_submit_once(h: Harness) -> None:
    """Ten simultaneous confirms: exactly one is accepted."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    results = await asyncio.gather(
        *(asyncio.to_thread(h.service.confirm, preview.operation.id, BOB) for _ in range(10))
    )
    assert sorted(r.ok for r in results) == [False] * 9 + [True]


async def test_provider_stop_error_fails_with_provider_message(h: Harness) -> None:
    """A provider that ends the stop in STOP_ERROR fails the operation with its words."""
    qovery = h.sims.hub["qovery"]
    qovery.seed(
        {
            **h.sims.hub.initial_seed["qovery"],
            "clusters": [
                {**c, "fail_stop": True} if c["name"] == "dev-eu" else c
                for c in h.sims.hub.initial_seed["qovery"]["clusters"]
            ],
        }
    )
    op_id = await h.confirmed("dev-eu")
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.FAILED
    assert [t.provider_state for t in h.store.transitions(op_id) if t.provider_state] == [
        "STOP_QUEUED",
        "STOPPING",
        "STOP_ERROR",
    ]
    assert final.detail is not None
    assert str(final.detail).startswith("qovery reports STOP_ERROR: last execution ")


async def test_provider_5xx_on_stop_fails_clearly_and_never_retries(h: Harness) -> None:
    """A 500 answering the stop POST fails the operation with the provider's message, one POST."""
    h.sims.hub.faults.add(
        Fault(
            api="qovery",
            kind="status",
            method="POST",
            status=500,
            body={"message": "database is on fire"},
        )
    )
    op_id = await h.confirmed("dev-eu")
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.FAILED
    assert final.detail == Text(
        "qovery: the provider failed on its side (internal error) (HTTP 500): database is on fire"
    )


async def test_silent_failure_times_out(h: Harness) -> None:
    """An ~okeanos stop that never completes ends as timed out after the configured limit."""
    spark = h.config.resource("spark")
    h.sims.hub["okeanos"].set_fail_stop(spark.id, options=spark.options)
    op_id = await h.confirmed("spark")
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.TIMED_OUT
    assert final.detail == Text(
        "spark did not reach a stopped state within 0:02:00 (last state: started)."
    )


async def test_stopped_between_confirmation_and_submit(h: Harness) -> None:
    """A cluster stopped by someone else after the preview ends as stopped-already (409)."""
    op_id = await h.confirmed("dev-eu")
    h.sims.hub["qovery"].set_state(h.config.resource("dev-eu").id, "STOPPED")
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.STOPPED_ALREADY


async def test_a_stop_someone_else_queued_after_the_preview_is_followed(h: Harness) -> None:
    """Someone else stops the cluster between the preview and the submit: Qovery's 409
    ("an operation is in progress") is that stop, followed to Stopped, not a failure."""
    op_id = await h.confirmed("dev-eu")
    await h.providers["qovery"].stop(h.config.resource("dev-eu"))
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.STOPPED
    steps = [(t.state, t.provider_state, t.message) for t in h.store.transitions(op_id)]
    assert steps[3:] == [
        (
            "accepted",
            None,
            Text(
                "Qovery was already taking the cluster down (cluster status: STOP_QUEUED); "
                "following that."
            ),
        ),
        ("accepted", "STOP_QUEUED", None),
        ("in_progress", None, None),
        ("in_progress", "STOPPING", None),
        ("in_progress", "STOPPED", None),
        ("stopped", None, None),
    ]


async def test_restart_resumes_following_without_a_second_stop(h: Harness) -> None:
    """A bot killed mid-stop resumes following from the store; the provider gets one stop."""
    op_id = await h.confirmed("dev-eu")
    await h.cut_in_progress(op_id)
    op = h.store.get_operation(op_id)
    assert op is not None and op.state == OpState.IN_PROGRESS

    [resumed] = await h.restart().resume(lambda op: Recorder())
    final = await resumed
    assert final.state == OpState.STOPPED
    posts = [e for e in h.store.audit_log() if e.action == "stop.accepted"]
    assert len(posts) == 1
    assert [t.provider_state for t in h.store.transitions(op_id) if t.provider_state] == [
        "STOP_QUEUED",
        "STOPPING",
        "STOPPED",
    ]


async def test_a_stop_resumed_after_a_restart_is_followed_as_a_follower(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop followed again by the next process makes room for the stops being sent too
    (its store calls are a follower's, as in the process that sent it)."""
    op_id = await h.confirmed("dev-eu")
    await h.cut_in_progress(op_id)
    seen = spy_on_loop_lane(h, monkeypatch)
    [resumed] = await h.restart().resume(lambda op: Recorder())
    assert (await resumed).state == OpState.STOPPED
    assert ("end", True) in seen
    assert [name for name, following in seen if name in ("_look", "end") and not following] == []


async def test_a_sweep_carries_on_this_process_s_own_stop_left_undriven(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop of this very process whose driver ended without ending it is carried on by
    the next sweep, once: not again while it is driven, and a stop read in flight that
    ended before the sweep looked at it is left alone."""
    op_id = await h.confirmed("dev-eu")
    await h.cut_in_progress(op_id)  # its task gone, the process alive
    [resumed] = await h.service.resume(lambda op: Recorder())
    assert await h.service.resume(lambda op: Recorder()) == []  # driven now
    assert (await resumed).state == OpState.STOPPED
    assert [e.action for e in h.store.audit_log() if e.action == "stop.accepted"] == [
        "stop.accepted"
    ]
    # Read as in flight (the store's answer, as it was a moment before): ended since.
    monkeypatch.setattr(h.store, "in_flight_ids", lambda owner: [op_id])
    assert await h.service.resume(lambda op: Recorder()) == []


async def test_waiting_for_an_operation_nobody_follows_takes_it_over(h: Harness) -> None:
    """An operation left in progress by a process that died is not waited for forever:
    until_final follows it itself, to Stopped, without a second stop."""
    op_id = await h.confirmed("dev-eu")
    await h.cut_in_progress(op_id)
    h.sims.hub.faults.reset_counts()
    listener = Recorder()
    final = await h.restart().until_final(op_id, listener)
    assert final.state == OpState.STOPPED
    assert listener.states()[-1][0] == "stopped"
    assert h.sims.hub.faults.counts()["qovery"].get("POST", 0) == 0


async def test_a_confirmed_stop_never_sent_before_a_restart_is_sent_after_it(h: Harness) -> None:
    """A process killed after the confirmation but before it claimed the send provably
    never sent the stop: the next process sends it, once, and follows it to Stopped."""
    op_id = await h.confirmed("dev-eu")  # submitting, its claim to send never taken
    h.sims.hub.faults.reset_counts()
    [resumed] = await h.restart().resume(lambda op: Recorder())
    final = await resumed
    assert final.state == OpState.STOPPED
    assert h.sims.hub.faults.counts()["qovery"]["POST"] == 1
    assert [e.action for e in h.store.audit_log(resource="dev-eu")] == [
        "stop.requested",
        "stop.awaiting_confirmation",
        "stop.submitting",
        "stop.accepted",
        "stop.in_progress",
        "stop.stopped",
    ]
    assert h.store.get_operation(op_id) == final


async def test_a_stop_sent_elsewhere_before_its_start_is_waited_for(h: Harness) -> None:
    """A confirmed stop another process took over and sent before this one started it
    (this one was taken for dead meanwhile): starting it here waits for its end (not for
    itself), sends nothing, and raises nothing."""
    op_id = await h.confirmed("dev-eu")
    taken_for_dead = h.service
    h.sims.hub.faults.reset_counts()
    sent = asyncio.Event()

    class Watch(Recorder):
        async def progress(self, op, timeline, status):  # type: ignore[no-untyped-def]
            if op.state == OpState.ACCEPTED:
                sent.set()

    [elsewhere] = await h.restart().resume(lambda op: Watch())
    await sent.wait()
    here = taken_for_dead.start(op_id, Recorder(), BOB)
    assert (await elsewhere).state == (await here).state == OpState.STOPPED
    assert h.sims.hub.faults.counts()["qovery"]["POST"] == 1


async def test_a_process_follows_a_stop_from_its_drive_to_its_end(h: Harness) -> None:
    """``following()`` (the garbage collector waits while it is true) holds while a stop
    is driven, a scheduled run's included (driven in its task, not started), and not
    after its end."""
    op_id = await h.confirmed("dev-eu")
    seen: list[bool] = []

    class Watch(Recorder):
        async def progress(self, op, timeline, status):  # type: ignore[no-untyped-def]
            seen.append(h.service.following())

    assert not h.service.following()
    final = await h.service.drive(op_id, Watch(), BOB)
    assert final.state == OpState.STOPPED
    assert seen and all(seen)
    assert not h.service.following()


async def test_a_process_started_beside_a_live_one_leaves_its_stops_alone(h: Harness) -> None:
    """A new process started while the old one still drives a stop (a rolling deploy) does
    not take it: the old process sends it, once, and the new one never calls the provider."""
    op_id = await h.confirmed("dev-eu")
    h.sims.hub.faults.reset_counts()
    beside = h.new_service()
    assert await beside.resume(lambda op: Recorder()) == []
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.STOPPED
    assert h.sims.hub.faults.counts()["qovery"]["POST"] == 1
    assert beside.in_flight() == []
    await beside.aclose()


async def test_two_processes_taking_over_one_stop_send_it_once(h: Harness) -> None:
    """The owner of a confirmed stop dies; two processes race to carry it on: one wins
    the claim to send and sends it, the other waits for it; both see it Stopped."""
    op_id = await h.confirmed("dev-eu")
    h.service.registry.me.abandon()
    h.sims.hub.faults.reset_counts()
    first, second = h.new_service(), h.new_service()
    finals = await asyncio.gather(
        first.run(op_id, Recorder(), BOB), second.run(op_id, Recorder(), BOB)
    )
    assert [f.state for f in finals] == [OpState.STOPPED, OpState.STOPPED]
    assert h.sims.hub.faults.counts()["qovery"]["POST"] == 1
    for service in (first, second):
        await service.aclose()


async def test_a_stop_whose_sender_died_before_the_call_left_is_judged_then_sent_again(
    h: Harness,
) -> None:
    """The claim to send was won, then the process died (the call may have left): the
    next process reads the status until the stop call could be over; the resource still
    running, the stop did not take: its claim is given back (audited) and the stop sent,
    once, and followed to Stopped."""
    op_id = await h.confirmed("dev-eu")
    assert h.store.claim_send(op_id, h.service.registry.id) is not None
    claimed_at = h.time.now()
    h.sims.hub.faults.reset_counts()
    [resumed] = await h.restart().resume(lambda op: Recorder())
    final = await resumed
    assert final.state == OpState.STOPPED and final.sends == 2
    http = h.config.http
    window = dt.timedelta(seconds=http.retry_budget + http.timeout + SUBMIT_MARGIN)
    [not_taken] = [e for e in h.store.audit_log() if e.action == "stop.not_taken"]
    assert window <= not_taken.at - claimed_at < window + h.config.stops.poll_initial * 2
    assert h.sims.hub.faults.counts()["qovery"]["POST"] == 1


async def test_a_stop_held_up_past_its_time_to_be_sent_is_claimed_again_not_sent_late(
    h: Harness,
) -> None:
    """The claim to send was won, then the call waited for its place among the account's
    requests (or the process was paused) past the retry budget: it does not leave then
    (a process taking this one for dead could have judged the stop lost and sent it
    meanwhile). Its claim is given back (audited) and taken again, and the stop sent once."""
    op_id = await h.confirmed("dev-eu")
    gate = h.providers["qovery"]._api.gate  # type: ignore[attr-defined]
    place, held, waiting = gate.slot, asyncio.Event(), asyncio.Event()

    @contextlib.asynccontextmanager
    async def late_place() -> AsyncIterator[None]:
        claimed = h.store.get_operation(op_id).send_claimed_at  # type: ignore[union-attr]
        if claimed is not None and not waiting.is_set():  # the stop's place, not a read's
            waiting.set()
            await held.wait()
        async with place():
            yield

    gate.slot = late_place
    h.sims.hub.faults.reset_counts()
    running = asyncio.create_task(h.service.run(op_id, Recorder(), BOB))
    await waiting.wait()
    assert h.store.get_operation(op_id).sends == 1  # type: ignore[union-attr]
    h.sims.hub.clock.advance(h.config.http.retry_budget + 1)
    held.set()
    final = await running
    assert (final.state, final.sends) == (OpState.STOPPED, 2)
    assert [e.detail for e in h.store.audit_log() if e.action == "stop.not_taken"] == [{"sends": 1}]
    assert h.sims.hub.faults.counts()["qovery"]["POST"] == 1


async def test_a_stop_that_did_not_take_twice_fails_saying_so(h: Harness) -> None:
    """A stop whose second claim did not take either (its sender died again before the
    call left) is not sent a third time: it fails, saying the provider did not take it."""
    op_id = await h.confirmed("dev-eu")
    me = h.service.registry.id
    assert h.store.claim_send(op_id, me) is not None
    assert h.store.release_claim(op_id, me, 1) is not None
    assert h.store.claim_send(op_id, me) is not None
    h.sims.hub.faults.reset_counts()
    [resumed] = await h.restart().resume(lambda op: Recorder())
    final = await resumed
    assert final.state == OpState.FAILED
    assert final.detail == say(
        "interrupted by a restart while the stop was being sent; the provider did not take "
        "it: dev-eu is DEPLOYED. Run {} again.",
        Command("stop", "dev-eu"),
    )
    assert h.sims.hub.faults.counts()["qovery"].get("POST", 0) == 0
    assert h.store.get_operation(op_id) == final


async def test_a_stop_whose_sender_died_after_sending_is_followed(h: Harness) -> None:
    """The claim was won and the stop sent, then the process died before recording the
    answer: the next process sees the stop under way and follows it, sending nothing."""
    op_id = await h.confirmed("dev-eu")
    assert h.store.claim_send(op_id, h.service.registry.id) is not None
    await h.providers["qovery"].stop(h.config.resource("dev-eu"))
    h.sims.hub.faults.reset_counts()
    [resumed] = await h.restart().resume(lambda op: Recorder())
    final = await resumed
    assert final.state == OpState.STOPPED
    assert h.sims.hub.faults.counts()["qovery"].get("POST", 0) == 0
    accepted = [e for e in h.store.audit_log() if e.action == "stop.accepted"]
    assert [e.detail for e in accepted] == [{"detail": "resumed after a restart"}]


async def test_a_preparation_cut_by_a_restart_is_ended_and_owed_to_its_face(h: Harness) -> None:
    """A request whose process died while preparing it stays nowhere: the next process
    ends it failed, saying nothing was stopped, and owes its face that news."""
    op, _ = h.store.create_operation(
        resource="dev-eu",
        provider="qovery",
        resource_id="x",
        requested_by=BOB.id,
        source="slack",
        owner=h.service.registry.id,
        notify=True,
    )
    assert await h.restart().resume(lambda op: Recorder()) == []
    ended = h.store.get_operation(op.id)
    assert ended is not None and ended.state == OpState.FAILED
    assert ended.detail == Text(
        "interrupted by a restart while it was being prepared: nothing was stopped"
    )
    [owed] = h.store.owed()
    assert (owed.key, owed.kind, owed.urgent) == (f"progress:{op.id}", "progress", True)


async def test_a_stop_accepted_after_another_process_gave_it_up_is_audited(
    h: Harness,
) -> None:
    """Should another process mark the operation failed while the provider was taking the
    stop, the acceptance is not lost: the audit log says the provider has the stop."""
    op_id = await h.confirmed("dev-eu")
    qovery = h.providers["qovery"]
    send = qovery.stop

    async def judged_meanwhile(resource: Resource, *, force: bool = False) -> StopAccepted:
        h.store.transition(op_id, OpState.FAILED, allowed_from=[OpState.SUBMITTING], actor="other")
        return await send(resource, force=force)

    qovery.stop = judged_meanwhile  # type: ignore[method-assign]
    final = await h.service.run(op_id, Recorder(), BOB)
    assert final.state == OpState.FAILED
    [late] = [e for e in h.store.audit_log() if e.action == "stop.accepted_late"]
    assert (late.actor, late.operation_id, late.detail["state"]) == ("stopbot", op_id, "failed")


async def test_a_stop_right_after_its_preview_checks_the_lock_read_with_the_status(
    h: Harness,
) -> None:
    """run(prepared=preview) within LOCK_READ_REUSE of the preview's read checks that read,
    and the Stopbot locks afresh: one GET before the stop, not two."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    assert h.service.confirm(preview.operation.id, BOB).ok
    h.sims.hub.faults.reset_counts()
    final = await h.service.run(preview.operation.id, Recorder(), BOB, prepared=preview)
    assert final.state == OpState.STOPPED
    # The stop, then one poll a second through STOP_QUEUED and STOPPING (3 s each).
    assert h.sims.hub.faults.counts() == {"qovery": {"POST": 1, "GET": 7}}


async def test_a_stopbot_lock_taken_after_the_preview_still_refuses_the_stop(
    h: Harness,
) -> None:
    """Reusing the preview's provider lock read, the Stopbot lock is still read at run."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    assert h.service.confirm(preview.operation.id, BOB).ok
    h.store.set_lock("dev-eu", ALICE.id, h.time.now() + dt.timedelta(hours=2), reason="demo")
    h.sims.hub.faults.reset_counts()
    final = await h.service.run(preview.operation.id, Recorder(), BOB, prepared=preview)
    assert final.state == OpState.REFUSED
    assert h.sims.hub.faults.counts() == {}


async def test_a_preview_older_than_the_reuse_limit_means_a_fresh_lock_read(
    h: Harness,
) -> None:
    """A provider lock taken after a preview read more than LOCK_READ_REUSE ago is seen:
    the lock is read again right before the stop, which is not sent."""
    preview = await h.service.prepare("dev-eu", BOB, source="test")
    assert h.service.confirm(preview.operation.id, BOB).ok
    await h.time.sleep((LOCK_READ_REUSE + dt.timedelta(milliseconds=1)).total_seconds())
    h.sims.hub["qovery"].set_lock(
        "0b9e1c7a-6f4d-4a2b-8c3e-5d7f9a1b2c01", owner="Alice Martin", reason="load test"
    )
    h.sims.hub.faults.reset_counts()
    final = await h.service.run(preview.operation.id, Recorder(), BOB, prepared=preview)
    assert final.state == OpState.REFUSED
    assert "locked in qovery by Alice Martin" in str(final.detail)
    assert h.sims.hub.faults.counts() == {"qovery": {"GET": 1}}


async def test_polls_start_a_poll_interval_apart_however_long_a_read_takes(h: Harness) -> None:
    """A read that takes 0.4 s (on the one clock) is followed by a 0.6 s sleep, not 1 s:
    with polls every second, reads start every second."""
    provider = h.providers["qovery"]
    read = provider.status

    async def slow_status(resource: Resource) -> ResourceStatus:
        h.sims.hub.clock.advance(0.4)
        return await read(resource)

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await h.time.sleep(seconds)

    provider.status = slow_status  # type: ignore[method-assign]
    service = StopService(h.config, h.store, h.providers, clock=h.time.now, sleep=sleep)
    preview = await service.prepare("dev-eu", BOB, source="test")
    assert service.confirm(preview.operation.id, BOB).ok
    final = await service.run(preview.operation.id, Recorder(), BOB, prepared=preview)
    assert final.state == OpState.STOPPED
    # Reads 0.4 s after 0 s, 1 s, … 6 s: STOPPED (two 3 s steps) is seen by the seventh.
    assert slept == [pytest.approx(0.6, abs=1e-5)] * 6
    await service.aclose()


async def test_two_stops_of_one_resource_confirmed_together_make_one_provider_call(
    h: Harness,
) -> None:
    """Bob and Alice each ask to stop dev-eu and confirm at once: one stop call reaches
    Qovery; Alice's request is told Bob is already stopping it, follows that stop instead
    of sending its own, and ends Stopped with it."""
    bob_preview = await h.service.prepare("dev-eu", BOB, source="test")
    alice_preview = await h.service.prepare("dev-eu", ALICE, source="test")
    h.sims.hub.faults.reset_counts()
    bob = h.service.confirm(bob_preview.operation.id, BOB)
    alice = h.service.confirm(alice_preview.operation.id, ALICE)
    assert bob.ok and bob.joined is None
    assert alice.ok and alice.joined == bob_preview.operation.id
    assert alice.message == say(
        "{} is already being stopped{}: this request follows that stop instead of sending another.",
        "dev-eu",
        say(" by {}", Person(BOB.id)),
    )
    finals = await asyncio.gather(
        h.service.run(bob_preview.operation.id, Recorder(), BOB),
        h.service.run(alice_preview.operation.id, Recorder(), ALICE),
    )
    assert [f.state for f in finals] == [OpState.STOPPED, OpState.STOPPED]
    assert h.sims.hub.faults.counts()["qovery"]["POST"] == 1


async def test_a_stop_following_another_ends_as_that_one_when_it_fails(h: Harness) -> None:
    """The stop it followed is refused by the provider: the follower does not wait for a
    resource that will not stop; it fails, saying why."""
    bob_preview = await h.service.prepare("dev-eu", BOB, source="test")
    alice_preview = await h.service.prepare("dev-eu", ALICE, source="test")
    h.service.confirm(bob_preview.operation.id, BOB)
    h.service.confirm(alice_preview.operation.id, ALICE)
    h.sims.hub.faults.add(
        Fault(api="qovery", kind="status", method="POST", status=500, body={"message": "boom"})
    )
    bob, alice = await asyncio.gather(
        h.service.run(bob_preview.operation.id, Recorder(), BOB),
        h.service.run(alice_preview.operation.id, Recorder(), ALICE),
    )
    assert bob.state == OpState.FAILED
    assert alice.state == OpState.FAILED
    assert str(alice.detail).startswith("the stop it followed ended failed: qovery:")
