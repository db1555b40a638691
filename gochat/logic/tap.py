"""``twistd gochat-logic``: options in, a frozen config, then :func:`gochat.logic.service.build`."""

from __future__ import annotations

import pathlib

from twisted.application.service import IService
from twisted.python import usage

from gochat.logic.batch_writer import BatchPolicy
from gochat.logic.chat import ChatSettings
from gochat.logic.service import DEFAULT_BROKER, DEFAULT_DATABASE, DEFAULT_REDIS, LogicConfig, build


class Options(usage.Options):
    """Command-line options of the logic role."""

    optParameters = [
        ["grpc-listen", None, "127.0.0.1:9090", "gRPC address to serve gateways on (host:port)."],
        ["data-dir", None, "gochat-data", "Directory for the token secret (and an SQLite database)."],
        [
            "database",
            None,
            DEFAULT_DATABASE,
            "mysql://user:password@host:port/name, or sqlite:PATH "
            "(empty: SQLite in DATA-DIR). Migrate MySQL first: python -m gochat.logic.migrate.",
        ],
        [
            "broker",
            None,
            DEFAULT_BROKER,
            "amqp://user:password@host:port/vhost of the durable persist queue, or 'none' to persist in-process.",
        ],
        ["persist-queue", None, "gochat.persist", "Name of the persist queue."],
        ["redis-key-prefix", None, "gochat:", "Prefix of every Redis key (one per deployment sharing a Redis)."],
        [
            "redis",
            None,
            DEFAULT_REDIS,
            "redis://host:port/db for routes and presence shared by every logic process, or 'none' to keep "
            "them in this process.",
        ],
        [
            "token-secret-file",
            None,
            "",
            "File holding the token signing secret, shared by all logic processes "
            "(created if missing; default: DATA-DIR/token.key).",
        ],
        ["node-id", None, 0, "This logic process's id (0-1023), unique among logic processes.", int],
        ["batch-size", None, 500, "Write a batch of messages at this many.", int],
        ["batch-delay-ms", None, 5.0, "... or this many milliseconds after the first one waits.", float],
        ["token-ttl", None, 86400.0, "Seconds a login token is valid.", float],
        ["max-group-size", None, ChatSettings.max_group_size, "Most members a group may have, owner included.", int],
        [
            "recall-window",
            None,
            ChatSettings.recall_window,
            "Seconds after sending during which a sender may recall a message.",
            float,
        ],
        [
            "edit-window",
            None,
            ChatSettings.edit_window,
            "Seconds after sending during which a sender may edit a message.",
            float,
        ],
        [
            "grpc-workers",
            None,
            1024,
            "gRPC server worker threads; all but 8 may wait on sends, so sends never starve other calls.",
            int,
        ],
    ]

    def postOptions(self) -> None:
        if self["max-group-size"] < 1:
            raise usage.UsageError("--max-group-size must be at least 1 (the owner)")
        for name in ("recall-window", "edit-window"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} must not be negative")


def config_from_options(options: Options) -> LogicConfig:
    """The frozen config the options describe."""
    return LogicConfig(
        data_dir=pathlib.Path(options["data-dir"]),
        database=options["database"],
        broker=None if options["broker"] in ("", "none") else options["broker"],
        persist_queue=options["persist-queue"],
        redis_key_prefix=options["redis-key-prefix"],
        redis=None if options["redis"] in ("", "none") else options["redis"],
        token_secret_file=options["token-secret-file"],
        grpc_listen=options["grpc-listen"],
        grpc_workers=options["grpc-workers"],
        node_id=options["node-id"],
        batch=BatchPolicy(max_batch=options["batch-size"], max_delay=options["batch-delay-ms"] / 1000.0),
        chat=ChatSettings(
            token_ttl=options["token-ttl"],
            max_group_size=options["max-group-size"],
            recall_window=options["recall-window"],
            edit_window=options["edit-window"],
        ),
    )


def makeService(options: Options) -> IService:
    """Build the logic role on the global reactor."""
    from twisted.internet import reactor

    return build(config_from_options(options), reactor)
