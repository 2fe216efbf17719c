"""Application factory: settings, logging, background services, blueprints."""
import logging

from flask import Flask

from config import Config

LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(format=LOG_FORMAT, level=level, force=True)


def create_app(config_class=Config, **overrides) -> Flask:
    """Build the app. Background services are attached here but not started:
    `wsgi.py` starts them in the serving process (after gunicorn's fork), and
    CLI commands that only read never start a feed."""
    from .web import create_flask_app
    app = create_flask_app(__name__)
    app.config.from_object(config_class)
    app.config.update(overrides)
    configure_logging(app.config["LOG_LEVEL"])

    from .services import Services
    app.extensions["services"] = Services(app.config)

    from .web import init_app as init_web
    init_web(app)

    from .cli import init_app as init_cli
    init_cli(app)
    return app
