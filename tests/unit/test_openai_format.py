"""OpenAI's chat-completions format without HTTP: stop strings over a stream of pieces, and the
request fields refused by name."""

from __future__ import annotations

import pytest

from gputui.http_api.openai_format import ApiError, StopStrings, parse_request


@pytest.mark.parametrize(("pieces", "stops", "out"), [
    (["hel", "lo wor", "ld"], ["wor"], "hello "),
    (["hel", "lo w", "o", "rld and more"], ["wor"], "hello "),  # a stop split over three pieces
    (["a", "b", "c"], ["x"], "abc"),
    (["ab", "cd", "ef"], ["cd", "b"], "a"),  # the earliest of several
    (["stop", " after"], ["stop"], ""),
    (["ab", "c", "dSTOP", "late words"], ["STOP"], "abcd"),  # nothing after a hit, however it arrives
    (["wo", "w"], ["wor"], "wow"),  # a held prefix that never completes is sent at the end
])
def test_stop_strings_send_exactly_what_precedes_the_first_stop(pieces: list[str], stops: list[str], out: str) -> None:
    s = StopStrings(stops)
    assert "".join(s.feed(p) for p in pieces) + s.flush() == out


def test_fields_gputui_cannot_honour_are_refused_by_name_not_ignored() -> None:
    base = {"model": "glm", "messages": [{"role": "user", "content": "hi"}]}
    for field, value in (("n", 3), ("logprobs", True), ("tools", [{"type": "function"}]), ("stop", ["a"] * 5),
                         ("temperature", 11), ("seed", -1), ("max_completion_tokens", 0), ("stream", "yes")):
        with pytest.raises(ApiError) as e:
            parse_request({**base, field: value})
        assert e.value.status == 400 and e.value.param == field, field
    ok = parse_request({**base, "max_completion_tokens": 7, "temperature": 0, "seed": 3, "stop": "END",
                        "user": "someone", "frequency_penalty": 0})  # others' harmless fields pass
    assert dict(ok.chat.params) == {"max_new_tokens": 7, "temperature": 0, "seed": 3} and ok.stops == ("END",)


def test_content_parts_are_joined_and_roles_mapped() -> None:
    c = parse_request({"model": "glm", "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]}]})
    assert c.chat.messages == ({"role": "system", "content": "be brief"}, {"role": "user", "content": "line one\nline two"})


def test_an_image_over_the_limit_is_refused_before_it_is_decoded() -> None:
    """An image part over 16 MiB (the body may hold 24) is a 400 naming the limit; one just under
    it is taken."""
    from gputui.http_api.openai_format import MAX_IMAGE_BYTES

    def request(n_bytes: int) -> dict[str, object]:
        payload = "A" * (((n_bytes + 2) // 3) * 4)  # base64 of n_bytes zero bytes
        part = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + payload}}
        return {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]}

    with pytest.raises(ApiError, match="over 16 MiB") as e:
        parse_request(request(MAX_IMAGE_BYTES + 4096))
    assert e.value.status == 400
    taken = parse_request(request(MAX_IMAGE_BYTES - 4096)).image
    assert taken is not None and taken.data is not None and len(taken.data) >= MAX_IMAGE_BYTES - 4096
