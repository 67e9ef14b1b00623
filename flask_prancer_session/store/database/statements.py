"""The statements of the database store, built once per store; what differs
between databases comes from the store's :class:`~.profiles.Profile`."""

from __future__ import annotations

import hashlib
import typing as t

import sqlalchemy as sa

from .profiles import fixed
from .profiles import Profile

#: How many expired sessions one purge transaction deletes at most.
PURGE_BATCH = 100
#: How many sessions one read of :meth:`.DatabaseStore.scan` returns at most.
SCAN_BATCH = 500


class Statements:
    """The statements of a store on ``table`` for ``application``. Those
    without a variable part are attributes; SQLAlchemy caches their compiled
    form. :meth:`merges` builds the others once each."""

    def __init__(self, table: sa.Table, application: str, profile: Profile) -> None:
        self.table = table
        self.application = application
        self.profile = profile
        #: How many rows a purge, clear or upgrade batch takes at most.
        self.purge_batch = PURGE_BATCH
        #: How many sessions a read of a scan returns at most.
        self.scan_batch = SCAN_BATCH
        c = table.c
        now: sa.BindParameter[float] = sa.bindparam("now", type_=sa.Double())
        this = sa.and_(
            c.id == sa.bindparam("key", type_=sa.String()), c.application == fixed(application)
        )
        mine = c.application == fixed(application)
        live = unindexed(c.expires_at) > now
        self.fetch = sa.select(c.created_at, c.expires_at, c.data).where(this, live)
        self.delete_empty = sa.delete(table).where(this, c.data == fixed("{}"))
        self.fetch_for_update = sa.select(c.created_at, c.data).where(this, live).with_for_update()
        self.rewrite = (
            sa.update(table)
            .where(this)
            .values(
                data=sa.bindparam("merged", type_=sa.Text()),
                user_id=sa.bindparam("user", type_=sa.String()),
                expires_at=sa.bindparam("new_expiry", type_=sa.Double()),
            )
        )
        self.touch = (
            sa.update(table)
            .where(this, live)
            .values(expires_at=sa.bindparam("new_expiry", type_=sa.Double()))
        )
        self.delete_live = sa.delete(table).where(this, live)
        self.delete = sa.delete(table).where(this)
        self.expired = sa.select(c.id).where(mine, c.expires_at <= now).limit(self.purge_batch)
        self.delete_expired = sa.delete(table).where(
            mine, c.id.in_(sa.bindparam("ids", expanding=True)), c.expires_at <= now
        )
        digest = hashlib.sha256(f"{table.fullname}\0{application}".encode())
        self.purge_lock_name = f"prancer_purge_{digest.hexdigest()[:40]}"
        self.delete_expired_batch = (
            sa.delete(table)
            .where(mine, c.expires_at <= now)
            .with_dialect_options(mysql_limit=self.purge_batch)
        )
        after = sa.bindparam("after", type_=sa.String())
        self.scan = (
            sa.select(c.id, c.created_at, c.expires_at, c.data)
            .where(mine, c.id > after, c.expires_at > now)
            .order_by(c.id)
            .limit(sa.bindparam("limit", type_=sa.Integer()))
        )
        self.batch = (
            sa.select(c.id).where(mine, c.id > after).order_by(c.id).limit(self.purge_batch)
        )
        ids = c.id.in_(sa.bindparam("ids", expanding=True))
        self.delete_live_ids = sa.delete(table).where(mine, ids, c.expires_at > now)
        self.delete_ids = sa.delete(table).where(mine, ids)
        user = c.user_id == sa.bindparam("user", type_=sa.String())
        self.of_user = sa.select(c.id, c.created_at, c.expires_at, c.data).where(
            mine, user, c.expires_at > now
        )
        self.delete_user_live = sa.delete(table).where(mine, user, c.expires_at > now)
        self.delete_user = sa.delete(table).where(mine, user)
        self._merges: dict[tuple[int, bool], tuple[sa.Update, sa.Insert]] = {}

    def merges(self, removals: int, binds: bool) -> tuple[sa.Update, sa.Insert]:
        """Return the UPDATE that merges changes into a live row and the INSERT
        that creates the row or merges into it, for ``removals`` keys to
        remove (MySQL's JSON paths), and setting ``user_id`` if the changes
        ``binds`` a user (the variable parts), built once each."""
        statements = self._merges.get((removals, binds))
        if statements is not None:
            return statements
        c = self.table.c
        now: sa.BindParameter[float] = sa.bindparam("now", type_=sa.Double())
        idle: sa.BindParameter[float] = sa.bindparam("idle", type_=sa.Double())
        absolute: sa.BindParameter[float] = sa.bindparam("absolute", type_=sa.Double())
        this = sa.and_(
            c.id == sa.bindparam("key", type_=sa.String()),
            c.application == fixed(self.application),
        )

        def expiry(created_at: sa.ColumnElement[t.Any]) -> sa.ColumnElement[t.Any]:
            return self.profile.least(idle, sa.func.coalesce(created_at + absolute, idle))

        merged, valid = self.profile.merged(c.data, removals)
        live = sa.and_(unindexed(c.expires_at) > now, valid)
        user_id = sa.bindparam("user", type_=sa.String())
        update = (
            sa.update(self.table)
            .where(this, live)
            .values(data=merged, expires_at=expiry(c.created_at))
        )
        if binds:
            update = update.values(user_id=user_id)
        values = {
            "id": sa.bindparam("key", type_=sa.String()),
            "application": fixed(self.application),
            "created_at": sa.bindparam("created_at", type_=sa.Double()),
            "expires_at": sa.bindparam("fresh_expiry", type_=sa.Double()),
            "data": sa.bindparam("fresh", type_=sa.Text()),
            "user_id": user_id,
        }

        def assignments(fresh: t.Any) -> list[tuple[str, sa.ColumnElement[t.Any]]]:
            created_at = sa.case((live, c.created_at), else_=fresh.created_at)
            user = fresh.user_id if binds else sa.case((live, c.user_id), else_=fresh.user_id)
            return [
                ("user_id", user),
                ("created_at", created_at),
                ("data", sa.case((live, merged), else_=fresh.data)),
                ("expires_at", expiry(created_at)),
            ]

        upsert = self.profile.upsert(self.table, values, assignments)
        self._merges[removals, binds] = update, upsert
        return update, upsert


def unindexed(expires_at: sa.Column[float]) -> sa.ColumnElement[float]:
    """Return ``expires_at`` as an expression no index holds, for the
    statements of one session: their plan then stays on the primary key.

    A plan PostgreSQL made while the table's statistics said it was small,
    and kept for a statement it sees often, would otherwise scan the
    ``expires_at`` index, or the whole table, at milliseconds per request.
    """
    return expires_at + sa.literal_column("0", sa.Double())
