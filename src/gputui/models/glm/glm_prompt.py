"""A ChatGLM3 conversation as prompt ids that fit the context (both GLM runtimes use it)."""

from __future__ import annotations

from typing import Any

from gputui.models.common.runtime import PromptTooLong
from gputui.models.glm.chatglm3_tokenizer import ChatGLM3Tokenizer

DEFAULT_MAX_NEW_TOKENS = 512


def reply_budget(params: dict[str, Any], max_context: int) -> int:
    """max_new_tokens as asked, within 1 .. half the context."""
    max_new = int(params.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
    return max(1, min(max_new, max_context // 2))


def fit_conversation(tok: ChatGLM3Tokenizer, max_context: int, messages: list[dict[str, Any]],
                     max_new: int) -> tuple[list[int], int]:
    """Prompt ids that fit the context with room for the reply; drops the oldest turns
    (never the system prompt, never the last message). Returns (ids, turns dropped)."""
    budget = max_context - max_new
    msgs = list(messages)
    # each message is tokenized once, and the oldest dropped by arithmetic: re-tokenizing the
    # whole conversation per dropped turn took 6 s before the first token at 800 turns
    parts = [tok.message_ids(m["role"], m.get("content", ""), m.get("metadata", "")) for m in msgs]
    frame = len(tok.chat_ids([]))  # [gMASK] sop ... <|assistant|>
    total = frame + sum(len(p) for p in parts)
    first = 1 if msgs and msgs[0].get("role") == "system" else 0
    drop = 0
    while total > budget:
        if len(msgs) - first - drop <= 1:
            raise prompt_too_long(total, budget)
        total -= len(parts[first + drop])
        drop += 1
    kept = parts[:first] + parts[first + drop:]
    ids = tok.chat_ids([])
    return ids[:-1] + [i for p in kept for i in p] + ids[-1:], drop


def dropped_notice(max_context: int, dropped: int) -> str:
    return (f"conversation longer than the {max_context}-token context: "
            f"left out the {dropped} oldest message(s)")


def prompt_too_long(n: int, budget: int) -> PromptTooLong:
    return PromptTooLong(f"prompt is {n} tokens; with room for the reply only {budget} fit",
                         f"the last message alone is {n} tokens, over the {budget} tokens this model's context "
                         "leaves for a prompt: shorten it or lower max_new_tokens")
