"""ChatGLM3's tokenizer, natively: SentencePiece plus nine special tokens and the chat format.

Facts (from the published tokenizer and its remote code): the SentencePiece model holds 64789
pieces with unk/pad 0, bos 1, eos 2; the special tokens are appended right after it in a fixed
order; a prompt is [gMASK] sop, then per message <|role|> + encode(metadata + "\\n") +
encode(content), then <|assistant|>. Generation stops at eos, <|user|> or <|observation|>.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece

SPECIAL_TOKENS = (
    "[MASK]", "[gMASK]", "[sMASK]", "sop", "eop",
    "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>",
)
ROLES = ("system", "user", "assistant", "observation")


class ChatGLM3Tokenizer:
    """Reads `path/tokenizer.model` (or a tokenizer.model file given directly)."""

    def __init__(self, path: str | Path) -> None:
        p = Path(path)
        model_file = p / "tokenizer.model" if p.is_dir() else p
        if not model_file.is_file():
            raise FileNotFoundError(f"{model_file}: ChatGLM3 needs its SentencePiece tokenizer.model")
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.n_pieces = self.sp.vocab_size()
        self.special = {tok: self.n_pieces + i for i, tok in enumerate(SPECIAL_TOKENS)}
        self.vocab_size = self.n_pieces + len(SPECIAL_TOKENS)
        self.unk_id, self.bos_id, self.eos_id, self.pad_id = 0, 1, 2, 0
        self.stop_ids = (self.eos_id, self.special["<|user|>"], self.special["<|observation|>"])

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; special tokens are dropped (or written as their names)."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if i < self.n_pieces:
                run.append(int(i))
                continue
            if run:
                out.append(self.sp.decode(run))
                run = []
            if not skip_special_tokens and i < self.vocab_size:
                out.append(SPECIAL_TOKENS[i - self.n_pieces])
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    def message_ids(self, role: str, content: str, metadata: str = "") -> list[int]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; ChatGLM3 knows {', '.join(ROLES)}")
        return [self.special[f"<|{role}|>"]] + self.encode(f"{metadata}\n") + self.encode(content)

    def chat_ids(self, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True) -> list[int]:
        """Prompt ids for a conversation, ending in <|assistant|> to ask for the reply."""
        ids = [self.special["[gMASK]"], self.special["sop"]]
        for m in messages:
            ids += self.message_ids(m["role"], m.get("content", ""), m.get("metadata", ""))
        if add_generation_prompt:
            ids.append(self.special["<|assistant|>"])
        return ids

    def stream_decoder(self) -> IncrementalDecoder:
        return IncrementalDecoder(self)


class IncrementalDecoder:
    """Turns a stream of ids into text pieces without splitting multi-byte characters.

    Decodes a small window instead of the whole reply on every token (the reply can be
    thousands of tokens), and holds back text that still ends in an incomplete UTF-8 sequence
    (SentencePiece's byte fallback shows it as U+FFFD until the next bytes arrive).
    """

    def __init__(self, tok: ChatGLM3Tokenizer) -> None:
        self.tok = tok
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self.tok.decode(self.ids[self.prefix_offset:self.read_offset])
        text = self.tok.decode(self.ids[self.prefix_offset:])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return text[len(prefix):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back at the end of the reply."""
        prefix = self.tok.decode(self.ids[self.prefix_offset:self.read_offset])
        text = self.tok.decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix):]
