"""The in-memory message and group stores (the tests' and the fakes' stores) keep the shared store contract."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from gochat.logic.memory import InMemoryGroupStore, InMemoryMessageStore
from tests.store_contract import StoreContract


class InMemoryStoreContractTests(StoreContract, TestCase):
    async def start_stores(self) -> None:
        self.messages = InMemoryMessageStore()
        self.groups = InMemoryGroupStore()
