"""Data: M-BEIR records, readers/writers, validation, local corpora and image loading."""

from mmembed.data.errors import DataError, ErrorLog
from mmembed.data.instructions import InstructionTable, read_instructions, write_instructions
from mmembed.data.mbeir import (
    Layout,
    read_pool,
    read_qrels,
    read_queries,
    write_pool,
    write_qrels,
    write_queries,
)
from mmembed.data.records import (
    DATASETS,
    TASKS,
    Candidate,
    Item,
    Modality,
    Query,
    as_item,
    hash_did,
    hash_qid,
    unhash_did,
    unhash_qid,
)

__all__ = [
    "DATASETS",
    "TASKS",
    "Candidate",
    "DataError",
    "ErrorLog",
    "InstructionTable",
    "Item",
    "Layout",
    "Modality",
    "Query",
    "as_item",
    "hash_did",
    "hash_qid",
    "read_instructions",
    "read_pool",
    "read_qrels",
    "read_queries",
    "unhash_did",
    "unhash_qid",
    "write_instructions",
    "write_pool",
    "write_qrels",
    "write_queries",
]
