"""The gateway role: holds client WebSockets and relays their frames to logic."""
