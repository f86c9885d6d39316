"""A hostile world, stdio: every request gets an answer, even ones the SDK cannot parse.

The real server as a subprocess on both backends, spoken to line by line over real pipes (a
real ``mcp.Client`` would refuse to send these bytes at all)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from helpers import INIT, USERS

from cctg_mcp.server.wire_guard import screen
from cctg_mcp.testing import TelegramStandIn

pytestmark = pytest.mark.anyio


def call_line(request_id: int, tool: str, arguments_json: str) -> bytes:
    head = f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"{tool}","arguments":'
    return (head + arguments_json + "}}\n").encode()


async def answer(reader: BufferedByteReceiveStream, request_id: int) -> dict[str, Any]:
    while True:
        line = await reader.receive_until(b"\n", 1 << 24)
        message: dict[str, Any] = json.loads(line)
        if message.get("id") == request_id:
            return message


async def test_lone_surrogates_and_deep_nesting_are_answered_over_stdio(
    standin: TelegramStandIn, tmp_path: Path, anyio_backend: str
) -> None:
    env = standin.server_env(tmp_path, USERS)
    command = [sys.executable, "-m", "cctg_mcp", "serve", "--backend", anyio_backend]
    with (tmp_path / "stderr.log").open("w") as errlog, anyio.fail_after(60):
        process: Process = await anyio.open_process(command, env=env, stderr=errlog)
        async with process:
            assert process.stdin is not None and process.stdout is not None
            reader = BufferedByteReceiveStream(process.stdout)
            await process.stdin.send((json.dumps(INIT) + "\n").encode())
            assert "result" in await answer(reader, 1)
            await process.stdin.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

            await process.stdin.send(call_line(2, "send_telegram_message", '{"message":"a\\ud800b"}'))
            surrogate = await answer(reader, 2)
            deep = "[" * 250 + "]" * 250
            await process.stdin.send(
                call_line(3, "send_telegram_event", f'{{"type":"info_notification","data":{deep}}}')
            )
            nested = await answer(reader, 3)
            await process.stdin.send(b"this is not json\n")
            await process.stdin.send(call_line(4, "send_telegram_message", '{"message":"still serving"}'))
            fine = await answer(reader, 4)
            await process.stdin.aclose()
            with anyio.fail_after(20):
                await process.wait()
    assert surrogate["error"]["code"] == -32602
    assert "arguments.message" in surrogate["error"]["message"] and "surrogate" in surrogate["error"]["message"]
    assert nested["error"]["code"] == -32602
    assert "arguments.data" in nested["error"]["message"] and "nested" in nested["error"]["message"]
    assert fine.get("result", {}).get("isError") is False, fine
    assert len(standin.sent) == len(USERS)  # only the good request sent anything


def test_screen_lets_good_lines_through_and_names_the_problem_of_bad_ones() -> None:
    good = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
    assert screen(good) is None
    assert screen("") is None
    parse = screen("{oops")
    assert parse is not None and (parse.request_id, parse.code) == (None, -32700)
    invalid = screen('{"jsonrpc":"2.0","id":"x","nomethod":1}')
    assert invalid is not None and (invalid.request_id, invalid.code) == ("x", -32600)
    very_deep = call_line(9, "send_telegram_event", '{"data":' + "[" * 5000 + "]" * 5000 + "}").decode()
    deep = screen(very_deep)  # deeper than Python's own recursion limit: the id is still found
    assert deep is not None and (deep.request_id, deep.code) == (9, -32602)
    assert screen('{"jsonrpc":"2.0","method":"notifications/x","params":{"a":"\\ud800"}}') is not None
