"""gunicorn settings. One worker process: the feed must run exactly once.
gthread with more threads than the WebSocket client limit, because every
WebSocket client holds a thread for its whole life and REST must not starve."""
import ipaddress
import resource
import signal
import threading

from config import Config

bind = Config.BIND
workers = Config.WEB_CONCURRENCY
# gthread that gives a connection a thread only once its request headers are
# in (slow clients cannot hold the threads; see the module).
worker_class = "app.web.gunicorn_worker.Worker"
threads = Config.WS_MAX_CLIENTS + 32
# Every WebSocket client is a connection for its whole life: room for all of
# them, and gunicorn's default 1000 beside them for REST (kept-alive ones included).
worker_connections = threads + 1000
# Not preloaded: wsgi.py starts the background threads in the worker, after the fork.
preload_app = False
max_requests = 0
graceful_timeout = 20
timeout = 60
# Access lines go through the logging config below.
access_log = Config.ACCESS_LOG
# gunicorn's control socket has one default path per user, which two
# instances (or the test suite's) would fight over; we do not use it.
control_socket_disable = True
loglevel = Config.LOG_LEVEL.lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"std": {"format": "%(asctime)s - %(name)s - %(levelname)s - %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "std"}},
    "root": {"handlers": ["console"], "level": Config.LOG_LEVEL},
    "loggers": {
        "gunicorn.error": {"level": Config.LOG_LEVEL, "handlers": [], "propagate": True},
        "gunicorn.access": {"level": "INFO" if access_log else "WARNING", "handlers": [], "propagate": True},
    },
}


def post_worker_init(worker):
    """On SIGTERM, gunicorn stops accepting and waits for open requests; our
    WebSocket clients never end by themselves, so we also tell the services
    to close them (1001) and stop, in a thread: a signal handler must not block."""
    services = worker.wsgi.extensions["services"]
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum, frame):
        gunicorn_handler(signum, frame)
        threading.Thread(target=services.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, on_sigterm)


def on_starting(server):
    # The fan-out writes each client's plain socket without blocking, which
    # a TLS socket does not allow: refuse at once rather than fail per client.
    if server.cfg.is_ssl:
        server.log.error("gunicorn's TLS is not supported: terminate TLS in a reverse proxy (README, Deploying)")
        raise SystemExit(1)
    # config.py refuses WEB_CONCURRENCY above 1; this is for -w and GUNICORN_CMD_ARGS.
    if server.cfg.workers != 1:
        server.log.error("one worker process only (got %d): the feed must run once", server.cfg.workers)
        raise SystemExit(1)
    _raise_file_limit(server)


def _raise_file_limit(server):
    """Every connection is a file. The soft limit is often 1024 (the worker
    inherits it) while the hard one is far higher: take what the connections
    need, or say that the hard limit is too low."""
    needed = server.cfg.worker_connections + 256   # and the feed, databases, logs
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != resource.RLIM_INFINITY and soft < needed:
        server.log.warning("open files are limited to %d, short of the %d that WS_MAX_CLIENTS=%d needs: "
                           "raise the limit (ulimit -n, systemd's LimitNOFILE)", soft, needed, Config.WS_MAX_CLIENTS)


def when_ready(server):
    if not Config.API_KEY and not all(_loopback(a) for a in server.cfg.address):
        server.log.warning("subscribe/unsubscribe are open to anyone who can reach %s: set API_KEY "
                           "(browsers' cross-site requests are refused either way)", Config.BIND)


def _loopback(address) -> bool:
    if isinstance(address, (str, bytes, int)):  # unix socket path or inherited fd: local
        return True
    host = address[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
