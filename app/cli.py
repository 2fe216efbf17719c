"""Flask CLI commands (`flask --app wsgi:app --help` lists them)."""


def init_app(app):
    from .replay.cli import replay_command
    app.cli.add_command(replay_command)
    from .storage.cli import analyze_command, check_db_command
    app.cli.add_command(analyze_command)
    app.cli.add_command(check_db_command)
