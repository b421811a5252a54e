"""SQLite set-up for every ukedge store, in one place.

Each store (instance records, the results spool, the image usage table, the hub's metadata, the
controller's state) is one SQLite file shared by threads of one process and by several
processes (the CLI beside the agent, two hub workers). They all need the same three things, and
got them subtly differently when each wrote its own:

* **WAL**, so readers never wait for a writer and a crash leaves the last committed state;
* a **busy timeout**, so a second writer waits for the lock instead of failing at once;
* **``BEGIN IMMEDIATE``** for every transaction that may write: a deferred transaction that reads
  and then writes has to upgrade its lock at the first write, and when two do so at once SQLite
  fails one with "database is locked" at once (the busy timeout cannot help: waiting would
  deadlock). Taking the write lock at ``BEGIN`` makes check-then-write sequences (admission,
  a manifest PUT checking its blobs, the GC's sweep) serialise instead, across processes too.

Plus foreign keys on, so a schema's ``ForeignKey`` is a constraint and not a comment.

The durability of a commit is each store's choice: ``synchronous=FULL`` (the default) makes a
commit survive a power cut; ``NORMAL`` (WAL's usual setting) keeps the file consistent but may
lose the last commits to a power cut, which suits data that is re-derived or re-delivered.

Two front ends share that set-up (:func:`configure`, :class:`Settings`):

* :class:`SQLiteFile` on the standard library's :mod:`sqlite3`, for the stores the CLI opens on
  every local command (instance records, image usage): importing SQLAlchemy costs more CPU than
  the whole of ``ukedge ps`` may take (issue 9, a fast CLI);
* :class:`SQLiteDatabase` on SQLAlchemy (Core and ORM), for the servers' stores (the hub's
  metadata, the results spool) and the controller, whose queries stay portable to PostgreSQL.
  It loads on first use, so importing this package does not import SQLAlchemy.

Both keep their connections open for the life of the store (closing the last connection to a
WAL file checkpoints it, which would make every small write cost a checkpoint) and both switch
off :mod:`sqlite3`'s own transaction handling, so that they decide how each transaction begins.
"""

import typing

from ukedge._lazy import lazy_exports
from ukedge.sqlite._file import SQLiteFile
from ukedge.sqlite._setup import Settings, Synchronous, configure, connect

__all__ = ["SQLiteDatabase", "SQLiteFile", "Settings", "Synchronous", "configure", "connect"]

if typing.TYPE_CHECKING:
    from ukedge.sqlite._engine import SQLiteDatabase

__getattr__ = lazy_exports(globals(), {"SQLiteDatabase": "ukedge.sqlite._engine"})
