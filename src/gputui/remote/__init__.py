"""The per-user gputui server and its client: the scheduler outlives the SSH session, and the
dashboard, `gputui chat`, `ps`, `stop` and scripts attach over a Unix socket (wire.py says how).
The server wraps a client (LocalClient) and serves it unchanged; RemoteClient is the same
interface on the other side (gputui.api.Client)."""
