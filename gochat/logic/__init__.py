"""The logic role: accounts, ordering, persistence and routing of messages."""
