"""Moving Flask-Session's visitors over without logging them out
(``PRANCER_SESSION["migrate_from"] = "flask-session"``)."""

from .migrator import FlaskSessionMigrator as FlaskSessionMigrator
from .migrator import SESSION_TYPES as SESSION_TYPES

__all__ = ["FlaskSessionMigrator", "SESSION_TYPES"]
