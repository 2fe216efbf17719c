"""`python -m app.replay --port N --speed 600`: the replay exchange without
the main app's configuration (tests start it this way)."""
from app import configure_logging

from .cli import replay_command

configure_logging("INFO")
replay_command.main(prog_name="python -m app.replay")
