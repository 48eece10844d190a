"""ChatGLM3's tokenizer and chat format, natively on SentencePiece."""

from __future__ import annotations

from pathlib import Path

import pytest

from gputui.models.glm.chatglm3_tokenizer import SPECIAL_TOKENS, ChatGLM3Tokenizer


@pytest.fixture(scope="module")
def tok(tiny_chatglm3_path: Path) -> ChatGLM3Tokenizer:
    return ChatGLM3Tokenizer(tiny_chatglm3_path)


def test_special_tokens_follow_the_sentencepiece_vocabulary(tok: ChatGLM3Tokenizer) -> None:
    n = tok.sp.vocab_size()
    assert [tok.special[t] for t in SPECIAL_TOKENS] == list(range(n, n + 9))
    assert (tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.sp.id_to_piece(1) == "<s>" and tok.sp.id_to_piece(2) == "</s>"
    assert tok.stop_ids == (2, tok.special["<|user|>"], tok.special["<|observation|>"])


def test_prompt_ids_of_a_known_conversation_match_the_documented_layout(tok: ChatGLM3Tokenizer) -> None:
    s = tok.special
    msgs = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "你好"},
    ]
    expected = [s["[gMASK]"], s["sop"]]
    for m in msgs:
        expected += [s[f"<|{m['role']}|>"]] + tok.sp.encode("\n") + tok.sp.encode(m["content"])
    expected.append(s["<|assistant|>"])
    assert tok.chat_ids(msgs) == expected


def test_observation_role_and_metadata(tok: ChatGLM3Tokenizer) -> None:
    ids = tok.message_ids("observation", "42", metadata="calc")
    assert ids[0] == tok.special["<|observation|>"]
    assert ids[1:] == tok.sp.encode("calc\n") + tok.sp.encode("42")
    with pytest.raises(ValueError, match="unknown role"):
        tok.message_ids("robot", "x")


@pytest.mark.parametrize("text", ["hello world", "你好，世界。我们在终端里聊天。", "emoji 🚀 and ünïcödé"])
def test_text_round_trips(tok: ChatGLM3Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


def test_streaming_never_emits_a_broken_character(tok: ChatGLM3Tokenizer) -> None:
    text = "图片里有一只🚀猫, and a dog. 你好"
    ids = tok.encode(text)
    dec = tok.stream_decoder()
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text
    assert sum(1 for p in pieces if p) > 3  # it really streams


def test_decode_drops_special_tokens_unless_asked(tok: ChatGLM3Tokenizer) -> None:
    ids = tok.chat_ids([{"role": "user", "content": "hi"}])
    assert "<|user|>" not in tok.decode(ids)
    assert "<|user|>" in tok.decode(ids, skip_special_tokens=False)


def test_fitting_a_long_conversation_drops_the_oldest_turns_exactly(tiny_chatglm3_path: Path) -> None:
    """The fit tokenizes each message once; it must keep what re-tokenizing the whole
    conversation after each dropped turn kept (the old, quadratic way)."""
    import pytest

    from gputui.models.common.runtime import PromptTooLong
    from gputui.models.glm.glm_prompt import fit_conversation, prompt_too_long

    tok = ChatGLM3Tokenizer(tiny_chatglm3_path)

    def reference(msgs: list[dict], budget: int) -> tuple[list[int], int]:
        msgs, dropped = list(msgs), 0
        ids = tok.chat_ids(msgs)
        while len(ids) > budget:
            first = 1 if msgs and msgs[0].get("role") == "system" else 0
            if len(msgs) - first <= 1:
                raise prompt_too_long(len(ids), budget)
            del msgs[first]
            dropped += 1
            ids = tok.chat_ids(msgs)
        return ids, dropped

    convo = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "words " * (i % 7)} for i in range(40)]
    for msgs in (convo, convo[1:]):
        for context in (40, 64, 100, 200, 400, 4000):
            try:
                want = reference(msgs, context - 8)
            except PromptTooLong:
                with pytest.raises(PromptTooLong):
                    fit_conversation(tok, context, msgs, 8)
                continue
            assert fit_conversation(tok, context, msgs, 8) == want, context
