"""The client seam: how anything uses the scheduler (the dashboard, `gputui chat`, `run`,
scripts, and next a server over a socket).

Commands return typed results; the read side is immutable views and one sequence-numbered event
stream a client can (re)join from any sequence number. Everything that crosses the seam is plain
data with to_json/from_json, so a socket can carry it unchanged. The in-process implementation
is gputui.scheduler.client.LocalClient.
"""

from gputui.api.chat import ChatEvent, ChatRequest, Journal
from gputui.api.client import ChatStream, Client, CommandRefused, ServerClient
from gputui.api.views import Event, ModelState, ModelView, PlanLine, ProfileStep, UnloadResult

__all__ = ["ChatEvent", "ChatRequest", "ChatStream", "Client", "CommandRefused", "Event", "Journal", "ModelState",
           "ModelView", "PlanLine", "ProfileStep", "ServerClient", "UnloadResult"]
