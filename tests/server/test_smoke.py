"""The server answers over a real socket, through the official OpenAI SDK."""

from __future__ import annotations

from tests.server.live import LiveServer


def test_openai_sdk_chat_round_trip(live: LiveServer) -> None:
    client = live.openai()
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, seed=1
    )
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.completion_tokens <= 4
