"""The person's side of the stand-in: updates scripted for getUpdates (texts, replies,
``/start``, button presses). Mixed into ``TelegramStandIn``, whose lock and counters it uses."""

from __future__ import annotations

import threading
import time
from typing import Any

from cctg_mcp.testing.model import SentMessage


class ScriptedPerson:
    """What a person does in Telegram, queued as Bot API updates."""

    _cond: threading.Condition
    _next_message_id: int
    _next_update_id: int
    _updates: list[dict[str, Any]]
    sent: list[SentMessage]

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue an update for getUpdates; its ``update_id`` is assigned here and returned."""
        with self._cond:
            update = {**update, "update_id": self._next_update_id}
            self._next_update_id += 1
            self._updates.append(update)
            self._cond.notify_all()
            return int(update["update_id"])

    def push_raw_update(self, update: dict[str, Any]) -> None:
        """Queue an update exactly as given, ``update_id`` included (odd or hostile ids)."""
        with self._cond:
            self._updates.append(dict(update))
            self._cond.notify_all()

    def _user(self, user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": f"user{user_id}"}

    def push_text(self, user_id: int, text: str, *, reply_to: int | None = None) -> int:
        """The person types ``text`` (as a reply to message ``reply_to``, if given)."""
        with self._cond:
            mid = self._next_message_id
            self._next_message_id += 1
        msg: dict[str, Any] = {"message_id": mid, "from": self._user(user_id), "date": int(time.time()), "text": text}
        msg["chat"] = {"id": user_id, "type": "private"}
        if reply_to is not None:
            msg["reply_to_message"] = {"message_id": reply_to, "chat": msg["chat"], "date": msg["date"]}
        return self.push_update({"message": msg})

    def press(self, user_id: int, message: SentMessage, label: str) -> int:
        """The person presses the button whose text contains ``label`` on ``message``."""
        rows = (message.reply_markup or {}).get("inline_keyboard") or []
        found = [b["callback_data"] for row in rows for b in row if label in b.get("text", "")]
        if len(found) != 1:
            raise ValueError(f"stand-in: {len(found)} buttons match {label!r} on message {message.message_id}")
        return self.push_callback(user_id, found[0], message.message_id)

    def push_start(self, user_id: int, *, first_name: str | None = None, username: str | None = None) -> int:
        """The person opens the bot and sends /start (what ``cctg-mcp setup`` waits for)."""
        with self._cond:
            mid = self._next_message_id
            self._next_message_id += 1
        sender = self._user(user_id)
        if first_name is not None:
            sender["first_name"] = first_name
        if username is not None:
            sender["username"] = username
        msg = {"message_id": mid, "from": sender, "date": int(time.time()), "text": "/start"}
        msg["chat"] = {"id": user_id, "type": "private"}
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": 6}]
        return self.push_update({"message": msg})

    def push_callback(self, user_id: int, data: str, message_id: int | None = None) -> int:
        with self._cond:
            if message_id is None:  # as Telegram: the message that carries the pressed button
                mine = [m for m in self.sent if m.chat_id == user_id]
                carrying = [
                    m.message_id
                    for m in mine
                    if m.reply_markup
                    and any(
                        b.get("callback_data") == data for row in m.reply_markup.get("inline_keyboard", []) for b in row
                    )
                ]
                message_id = carrying[-1] if carrying else (mine[-1].message_id if mine else 1)
            query_id = f"cbq{self._next_update_id}"
        chat = {"id": user_id, "type": "private"}
        message = {"message_id": message_id, "chat": chat, "date": int(time.time())}
        query = {"id": query_id, "from": self._user(user_id), "message": message, "data": data}
        query["chat_instance"] = str(user_id)
        return self.push_update({"callback_query": query})
