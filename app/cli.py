"""Flask CLI commands (`flask --help` lists them; .flaskenv names the app
factory, so a command never starts the feed the way wsgi.py does)."""


def init_app(app):
    from .replay.cli import replay_command
    app.cli.add_command(replay_command)
    from .storage.cli import analyze_command, check_db_command
    app.cli.add_command(analyze_command)
    app.cli.add_command(check_db_command)
