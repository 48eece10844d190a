"""Conversations: the on-disk journal (nothing lost) and the session logic shared by the TUI
chat screens and `gputui chat`. No Textual, no torch."""
