"""gochat's tests: trial test cases, run by both ``trial tests`` and ``pytest``."""
