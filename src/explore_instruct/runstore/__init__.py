"""The run store: the one owner of every SQLite database the project writes.

Each database has a schema module listing its tables and an ordered list of migrations
(`migrate.py` applies them), and query modules with typed rows. No SQL lives outside this package.
"""

from explore_instruct.runstore.batches import (
    BatchRow,
    BatchStore,
    BatchSummary,
    Failures,
    LineState,
    PendingLine,
    custom_id_for,
)
from explore_instruct.runstore.calls import CachedCall, CallLog, LoggedRequest
from explore_instruct.runstore.connection import connect, connect_readonly, in_memory, open_database, transaction
from explore_instruct.runstore.embeddings import VectorCache
from explore_instruct.runstore.estimates import EstimateRow, load_estimate_rows, save_estimate_rows
from explore_instruct.runstore.migrate import Migration, SchemaTooNew
from explore_instruct.runstore.ratings import clear_ratings, load_ratings, save_rating
from explore_instruct.runstore.review import ExampleCount, ReviewDecision, decisions
from explore_instruct.runstore.run import (
    CONFIG_FILE,
    DB_FILE,
    DROP_ORDER,
    ExampleRow,
    NewExample,
    NodeRow,
    RunStore,
    TreeView,
    Which,
    task_node,
)
from explore_instruct.runstore.schema import CACHE_MIGRATIONS, RUN_MIGRATIONS

__all__ = [
    "CACHE_MIGRATIONS",
    "CONFIG_FILE",
    "DB_FILE",
    "DROP_ORDER",
    "RUN_MIGRATIONS",
    "BatchRow",
    "BatchStore",
    "BatchSummary",
    "CachedCall",
    "CallLog",
    "EstimateRow",
    "ExampleCount",
    "ExampleRow",
    "Failures",
    "LineState",
    "LoggedRequest",
    "Migration",
    "NewExample",
    "NodeRow",
    "PendingLine",
    "ReviewDecision",
    "RunStore",
    "SchemaTooNew",
    "TreeView",
    "VectorCache",
    "Which",
    "clear_ratings",
    "connect",
    "connect_readonly",
    "custom_id_for",
    "decisions",
    "in_memory",
    "load_estimate_rows",
    "load_ratings",
    "open_database",
    "save_estimate_rows",
    "save_rating",
    "task_node",
    "transaction",
]
