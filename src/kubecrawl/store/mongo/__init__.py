"""The MongoDB store: the contract of ``store/contract.py`` on PyMongo's async API (``AsyncMongoClient``).

Selected by a ``mongodb://`` or ``mongodb+srv://`` database URL (``store/opening.py``). Everything is a
single-document atomic operation (a conditional ``find_one_and_update``/``update_one``, an upsert on a unique
index, ``$inc``): no multi-document transaction, no aggregation-pipeline update and no ``$expr`` (FerretDB, the
MongoDB-protocol server the tests run on, has none of them; docs/store.md lists each difference). How each
cross-document rule holds without a transaction is written on the module that keeps it:
``database.py`` (client, errors, indexes, schema version), ``page_metadata.py``, ``sites.py``, ``crawls.py``
(lifecycle and the per-page steps), ``frontier.py`` (page ids, new pages, the window), ``hosts.py``.
"""
