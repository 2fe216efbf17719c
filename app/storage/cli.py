"""`flask check-db` and `flask analyze`: storage from the command line."""
import json

import click
from flask import current_app
from flask.cli import with_appcontext

from .. import analysis
from ..candles import check_interval, normalize_symbol
from .errors import StorageError


def _store():
    return current_app.extensions["services"].storage.store


@click.command("check-db")
@with_appcontext
def check_db_command():
    """Write, read back and remove a sample point in the configured database."""
    report = _store().check()
    click.echo(f"check-db: {report['target']}")
    for step in report["steps"]:
        mark = "ok" if step["ok"] else "FAIL"
        click.echo(f"  [{mark:>4}] {step['step']:<7} {step['detail']}")
    if report["ok"]:
        click.echo("OK: the database takes writes and answers reads")
        return
    click.echo(f"FAILED: {report['diagnosis']}", err=True)
    raise SystemExit(1)


@click.command("analyze")
@with_appcontext
@click.argument("symbol")
@click.option("--interval", default=None, help="candle interval (default BINANCE_INTERVAL)")
@click.option("--window", default=analysis.DEFAULT_WINDOW, show_default=True,
              help="number of candles (500) or a duration (90m, 24h, 7d)")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def analyze_command(symbol, interval, window, as_json):
    """Statistics of a stored stream over its most recent window."""
    try:
        symbol = normalize_symbol(symbol)
        interval = check_interval(interval or current_app.config["BINANCE_INTERVAL"])
        result = analysis.analyze(_store(), symbol, interval, window)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    except StorageError as exc:
        click.echo(f"cannot read from storage: {exc.diagnosis}", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif not result["count"]:
        click.echo(f"no stored {interval} candles for {symbol}")
    else:
        click.echo(f"{symbol} {interval}, window {window}: {result['count']} candles, "
                   f"{result['first_time']} .. {result['last_time']}")
        skip = {"symbol", "interval", "window", "count", "first_time", "last_time",
                "first_open_time", "last_open_time"}
        for key, value in result.items():
            if key not in skip:
                click.echo(f"  {key.replace('_', ' '):<28} {_fmt(key, value)}")


def _fmt(key: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if key.endswith("_pct"):
        return f"{value:.4f} %"
    return f"{value:,.8g}" if abs(value) < 1e8 else f"{value:,.2f}"
