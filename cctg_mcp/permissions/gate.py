"""The permission use case, free of MCP: ask the person on Telegram whether a tool may run.

Claude Code hands each permission decision to an MCP tool (``--permission-prompt-tool``);
``server/permission_tools.py`` is that tool and calls ``PermissionGate.decide``. The answer
is never "allow" by default:

1. a tool on the deny list (``CCTG_PERMISSION_DENY``) is denied, one on the auto-allow list
   (``CCTG_PERMISSION_AUTO_ALLOW``) allowed, without asking;
2. otherwise an ``approval_request`` event (a summary of the call, Allow / Deny buttons) goes
   through the durable outbox to the allowed users. A fresh event id per request ties the
   answer to this request only: a press on another request's button names another event;
3. if no recipient got it within the send deadline (Telegram down, breaker open, delivery
   held), the copies still waiting are withdrawn from the outbox (so a stale question never
   pops up later) and the request is denied at once, saying why; if it is dead for one
   recipient (blocked bot), it is denied too, and the copies that did go out are edited to
   say so (their buttons go);
4. otherwise the first answer wins: Allow → allow; Deny, or a typed reply → deny; no answer
   within ``CCTG_PERMISSION_TIMEOUT`` → deny, saying so;
5. the delivered messages are edited to show the decision and who made it (the buttons go).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import anyio

from cctg_mcp.answers import Answers, TelegramResponse
from cctg_mcp.answers.common import ProgressFn
from cctg_mcp.delivery.mode import LOCAL, MUTED
from cctg_mcp.delivery.service import NotificationService, SendResult
from cctg_mcp.events.catalogue import Event, escape_html
from cctg_mcp.events.rendering import render_event
from cctg_mcp.permissions.summary import clip, matches, summarise
from cctg_mcp.resilience.errors import BaseResilienceError, redact

log = logging.getLogger(__name__)

#: Seconds one edit of the approval message may take (it never delays the decision by more).
EDIT_BUDGET = 5.0


@dataclass(frozen=True)
class PermissionDecision:
    """What Claude Code reads: ``to_json()`` is the tool's text content."""

    behavior: Literal["allow", "deny"]
    updated_input: dict[str, Any] | None = None
    message: str | None = None

    def to_json(self) -> str:
        if self.behavior == "allow":
            return json.dumps({"behavior": "allow", "updatedInput": self.updated_input or {}}, ensure_ascii=False)
        return json.dumps({"behavior": "deny", "message": self.message or "Denied."}, ensure_ascii=False)


def allow(tool_input: dict[str, Any]) -> PermissionDecision:
    return PermissionDecision("allow", updated_input=tool_input)


def deny(message: str) -> PermissionDecision:
    return PermissionDecision("deny", message=message)


def who(response: TelegramResponse) -> str:
    if response.username:
        return f"@{response.username}"
    return response.first_name or f"user {response.user_id}"


class PermissionGate:
    """Decides a Claude Code permission request by asking the person on Telegram; never allows by default."""

    def __init__(self, service: NotificationService) -> None:
        self.service = service
        self.settings = service.settings

    async def decide(
        self,
        tool_name: str,
        tool_input: dict[str, Any],
        tool_use_id: str | None = None,
        *,
        on_progress: ProgressFn | None = None,
    ) -> PermissionDecision:
        settings = self.settings
        listed = matches(tool_name, settings.permission_deny)
        if listed is not None:
            return deny(f"{tool_name} is on the deny list (CCTG_PERMISSION_DENY: {listed}); nobody was asked.")
        if matches(tool_name, settings.permission_auto_allow) is not None:
            return allow(tool_input)
        answers = self.service.answers
        if settings.delivery != "telegram" or not isinstance(answers, Answers):
            return deny(
                "Denied: permission prompts need the direct Telegram mode (TELEGRAM_BOT_TOKEN and "
                "TELEGRAM_ALLOWED_USERS set, CCTG_DELIVERY=telegram); nobody could be asked."
            )
        timeout = settings.permission_timeout
        data: dict[str, Any] = {
            "options": ["Allow", "Deny"],
            "requires_response": True,
            "response_options": ["Allow", "Deny"],
            "timeout_minutes": round(timeout / 60, 2),
            "permission": {"tool_name": tool_name[:200], "tool_use_id": (tool_use_id or "")[:200] or None},
        }
        event: Event | None = None
        try:
            event = self.service.build_event(
                type="approval_request",
                title=clip(f"Allow {tool_name}?", 200),
                description=summarise(tool_name, tool_input),
                data=data,
            )
            sent = await self.service.submit(event, operation="sendApprovalRequest")
        except BaseResilienceError as exc:
            if event is not None:  # e.g. dead for one recipient: the copies that went out must not decide
                await self._withdraw(event.event_id)
                await self._close_delivered(event, "🚫 <b>Denied</b>: the request could not reach every recipient")
            return deny(f"Denied: the request could not be sent to Telegram ({redact(str(exc))[:300]}).")
        delivered = [
            (r.chat_id, r.message_ids[-1]) for r in sent.recipients if r.status == "delivered" and r.message_ids
        ]
        if len(delivered) < len(sent.recipients):
            await self._withdraw(event.event_id)
        if not delivered:
            return deny(self._unreachable(sent))
        finish = _Finish(self, event.event_id, render_event(event)[-1].text, delivered)
        try:
            result = await answers.wait(event.event_id, timeout, on_progress=on_progress)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await finish("🚫 <b>No longer waiting</b> (the request was cancelled)")
            raise
        response = result.response
        if result.status != "answered" or response is None:
            await finish(f"⏱ <b>Denied</b>: no answer within {timeout:g} s")
            return deny(
                f"Denied: nobody answered on Telegram within {timeout:g} seconds (CCTG_PERMISSION_TIMEOUT). "
                "Ask again later or do something else."
            )
        by = who(response)
        if response.action == "approve":
            await finish(f"✅ <b>Allowed</b> by {escape_html(by)}")
            return allow(tool_input)
        if response.action == "text" and response.text:
            await finish(f"❌ <b>Denied</b> by {escape_html(by)}, who replied")
            return deny(f"Denied on Telegram by {by}, who replied: {clip(response.text, 1000)}")
        await finish(f"❌ <b>Denied</b> by {escape_html(by)}")
        return deny(f"Denied on Telegram by {by}.")

    def _unreachable(self, sent: SendResult) -> str:
        if sent.reason in (MUTED, LOCAL):  # held by the mode (delivery/mode.py), not an outage
            return (
                f"Denied: the notification mode is {'mute' if sent.reason == MUTED else 'local'}, so approval "
                "requests are not sent to Telegram. The request was withdrawn. Switch to nomad mode "
                "(switch_to_nomad_mode, or /cct:nomad in Telegram) to be asked there."
            )
        reason = redact(sent.reason or "Telegram did not accept it in time")[:300]
        return (
            f"Denied: nobody could be asked on Telegram now ({reason}). The request was withdrawn (it will "
            "not pop up later). Try again once get_resilience_status is healthy."
        )

    async def _withdraw(self, event_id: str) -> None:
        if self.service.outbox is not None:
            try:
                await self.service.outbox.withdraw(event_id)
            except Exception:  # the decision stands; a late copy is answered by nobody
                log.exception("permission: could not withdraw the undelivered copies of %s", event_id)

    async def _close_delivered(self, event: Event, outcome: str) -> None:
        """Edit the copies already delivered (the send failed for another recipient) to show
        the outcome, so their Allow/Deny buttons go: nobody waits for them any more."""
        outbox = self.service.outbox
        if outbox is None:
            return
        try:
            rows = await outbox.deliveries(event.event_id)
        except Exception:  # the decision stands; a press on a stale copy is answered by nobody
            log.exception("permission: could not read the delivered copies of %s", event.event_id)
            return
        delivered = [(d.chat_id, d.message_ids[-1]) for d in rows if d.status == "delivered" and d.message_ids]
        if delivered:
            await _Finish(self, event.event_id, render_event(event)[-1].text, delivered)(outcome)

    async def edit(self, chat_id: int, message_id: int, text: str) -> None:
        """Best effort: the decision is made whether or not the edit lands."""
        transport, pipelines, clock = self.service.transport, self.service.pipelines, self.service.clock
        if transport is None or pipelines is None:
            return
        deadline = clock.monotonic() + EDIT_BUDGET

        async def call() -> None:
            await transport.edit_message_text(chat_id, message_id, text)

        with clock.timeout_scope(EDIT_BUDGET):
            try:
                await pipelines.for_component("telegram").call("editMessageText", call, deadline=deadline)
                return
            except BaseResilienceError as exc:
                log.warning("permission: could not edit message %s in chat %s: %s", message_id, chat_id, exc)
                return
        log.warning("permission: editing message %s in chat %s took too long", message_id, chat_id)


@dataclass
class _Finish:
    """Edits every delivered copy of the request to show the outcome, once."""

    gate: PermissionGate
    event_id: str
    original: str
    delivered: list[tuple[int, int]]
    done: bool = False

    async def __call__(self, outcome: str) -> None:
        if self.done:
            return
        self.done = True
        at = datetime.fromtimestamp(self.gate.service.clock.time(), UTC).strftime("%H:%M UTC")
        text = f"{self.original}\n\n{outcome} · {at}"
        async with anyio.create_task_group() as tg:
            for chat_id, message_id in self.delivered:
                tg.start_soon(self.gate.edit, chat_id, message_id, text)
