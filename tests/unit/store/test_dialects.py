"""Each engine gets its way of serialising transactions and settling batches, decided once at construction."""

from __future__ import annotations

from kubecrawl.store.database import create_engine
from kubecrawl.store.dialects import SerialTransactions, Transactions, transactions
from kubecrawl.store.finishing import FinishInDatabase, FinishInProcess, batch_finisher
from kubecrawl.store.frontier import Frontier


def test_sqlite_serialises_in_process_and_settles_batches_statement_by_statement() -> None:
    engine = create_engine("sqlite:///:memory:")  # never connected
    tx = transactions(engine)
    assert isinstance(tx, SerialTransactions)
    assert isinstance(batch_finisher(engine, tx, Frontier(engine)), FinishInProcess)


def test_postgresql_relies_on_row_locks_and_settles_batches_in_its_own_function() -> None:
    engine = create_engine("postgresql+asyncpg://kubecrawl@127.0.0.1:1/none")  # never connected
    tx = transactions(engine)
    assert type(tx) is Transactions
    assert isinstance(batch_finisher(engine, tx, Frontier(engine)), FinishInDatabase)
