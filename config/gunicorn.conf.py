"""gunicorn settings for `make serve` and the benchmarks; override with GUNICORN_CMD_ARGS or -b/-w."""

import multiprocessing
import os

bind = os.environ.get("EDC_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("EDC_WORKERS", max(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("EDC_THREADS", 4))
worker_class = "gthread"
timeout = 60
graceful_timeout = 30
keepalive = 5
# gunicorn 27 opens a control socket under $HOME by default; the service needs none.
control_socket_disable = True
# Request lines are logged by the app as JSON (with request id, user and route); gunicorn's
# own access log would repeat them without that context.
accesslog = None
errorlog = "-"
loglevel = "info"
# Never let a proxy's view of the client be trusted here: edc applies trusted_proxy_hops itself.
forwarded_allow_ips = "127.0.0.1"
limit_request_line = 8190
