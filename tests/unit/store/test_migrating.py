"""``HEAD_REVISION``, the constant the embedded start-up compares the stored revision with, is the scripts' head."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from kubecrawl.store.migrating import HEAD_REVISION, alembic_config


def test_head_revision_is_the_newest_migration_script() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert scripts.get_heads() == [HEAD_REVISION]
