"""Prepare Superset's metadata database: migrations, roles and permissions, the `admin` login.

Run by the Superset environment's Python (.venv-bi), not the project's: `lakehouse bi` starts it with
SUPERSET_CONFIG_PATH set and the admin password on standard input. `--schema` also applies the migrations and
syncs the roles (`superset db upgrade` and `superset init` in one process); without it only the login is set.
"""

from __future__ import annotations

import sys


def main() -> None:
    password = sys.stdin.readline().strip()
    if not password:
        sys.exit("no admin password on standard input")
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from flask_migrate import upgrade
        from superset import appbuilder, security_manager
        from superset.extensions import db

        if "--schema" in sys.argv[1:]:
            upgrade()
            appbuilder.add_permissions(update_perms=True)
            security_manager.sync_role_definitions()
            db.session.commit()
        user = security_manager.find_user(username="admin")
        if user is None:
            made = security_manager.add_user(
                "admin", "Lakehouse", "Admin", "admin@localhost", security_manager.find_role("Admin"), password
            )
            if not made:
                sys.exit("could not create the admin login")
        else:
            security_manager.reset_password(user.id, password)
        db.session.commit()


if __name__ == "__main__":
    main()
