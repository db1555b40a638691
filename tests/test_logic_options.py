"""``gochat-logic`` options of groups, recall and edit, and the stores ``build`` composes for them."""

from __future__ import annotations

import pathlib

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from gochat.logic import tap
from gochat.logic.chat import ChatSettings
from gochat.logic.service import LogicConfig, _stores
from gochat.logic.sqlite_store import SqliteGroupStore


def parse(argv: list[str]) -> LogicConfig:
    options = tap.Options()
    options.parseOptions(argv)
    return tap.config_from_options(options)


class GroupOptionsTests(SynchronousTestCase):
    def test_defaults_are_the_chat_settings_defaults(self) -> None:
        chat = parse([]).chat
        defaults = ChatSettings()
        self.assertEqual(
            (chat.max_group_size, chat.recall_window, chat.edit_window),
            (defaults.max_group_size, defaults.recall_window, defaults.edit_window),
        )

    def test_options_set_the_chat_settings(self) -> None:
        chat = parse(
            ["--max-group-size", "50", "--recall-window", "30.5", "--edit-window", "0", "--token-ttl", "9"]
        ).chat
        self.assertEqual(chat, ChatSettings(token_ttl=9.0, max_group_size=50, recall_window=30.5, edit_window=0.0))

    def test_out_of_range_values_are_usage_errors(self) -> None:
        for argv in (
            ["--max-group-size", "0"],
            ["--max-group-size", "many"],
            ["--recall-window", "-1"],
            ["--edit-window", "-0.5"],
        ):
            with self.assertRaises(usage.UsageError, msg=argv):
                parse(argv)

    def test_embedded_store_has_a_group_store(self) -> None:
        """The SQLite stores ``build`` composes include a group store on the same pool."""
        from twisted.internet import reactor

        stores = _stores(LogicConfig(data_dir=pathlib.Path(self.mktemp())), reactor)
        self.addCleanup(stores.service.stopService)
        stores.service.startService()
        self.assertIsInstance(stores.groups, SqliteGroupStore)
