"""Flask CLI commands (`flask --app wsgi:app --help` lists them)."""


def init_app(app):
    from .replay.cli import replay_command
    app.cli.add_command(replay_command)
