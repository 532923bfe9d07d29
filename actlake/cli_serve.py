"""``actlake serve``: publish datasets over Arrow Flight (gRPC) to remote trainers."""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
from typing import List, Optional

import typer

from actlake.schemas.errors import JobSpecError, RemoteError

_DEFAULTS = {"max_batch_rows": 65536, "max_readahead": 8, "max_buffer_rows": 1 << 20, "max_streams": 64,
             "max_query_rows": 65536, "max_queries": 4}


def _public(uri: str) -> str:
    """A URI safe to print: user info (``user:secret@``) and query strings removed."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1", uri.split("?", 1)[0])


def _names(uris: list[str], names: list[str]) -> list[str]:
    if names and len(names) != len(uris):
        raise JobSpecError(f"give --name once per URI ({len(uris)} URIs, {len(names)} names)")
    out = names or [u.rstrip("/").rsplit("/", 1)[-1] for u in uris]
    from actlake.schemas.wire import check_name

    for n in out:
        try:
            check_name(n)
        except RemoteError as e:
            raise JobSpecError(f"{e} (choose one with --name)") from None
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise JobSpecError(f"two datasets would be served as {dup}; choose names with --name")
    return out


def serve(
    uris: List[str] = typer.Argument(..., help="dataset URIs (paths, s3://, gs://) to serve"),
    name: Optional[List[str]] = typer.Option(None, "--name", help="name a URI is served as, once per URI "
                                             "(default: the last path component of each URI)"),
    host: str = typer.Option("127.0.0.1", help="address to bind (0.0.0.0 exposes the server to the network)"),
    port: int = typer.Option(8815, help="port to bind (0: any free port; the chosen one is printed)"),
    token: Optional[str] = typer.Option(None, envvar="ACTLAKE_TOKEN", show_envvar=True,
                                        help="require this token on every call (prefer --token-file or the env)"),
    token_file: Optional[str] = typer.Option(None, help="read the token from this file (first line)"),
    tls_cert: Optional[str] = typer.Option(None, help="PEM certificate: serve grpc+tls:// (needs --tls-key)"),
    tls_key: Optional[str] = typer.Option(None, help="PEM private key of --tls-cert"),
    max_batch_rows: int = typer.Option(_DEFAULTS["max_batch_rows"], min=1,
                                       help="cap on rows per batch / take / provenance / sample request"),
    max_readahead: int = typer.Option(_DEFAULTS["max_readahead"], min=1,
                                      help="cap on batches assembled ahead per stream (server memory per "
                                           "stream ≈ (readahead + 8) × batch bytes, plus the shuffle window)"),
    max_buffer_rows: int = typer.Option(_DEFAULTS["max_buffer_rows"], min=1,
                                        help="cap on the shuffle window (rows) a client may request"),
    max_streams: int = typer.Option(_DEFAULTS["max_streams"], min=1, help="cap on concurrent streams"),
    max_query_rows: int = typer.Option(_DEFAULTS["max_query_rows"], min=1,
                                       help="cap on k, bins × per_bin, fetched rows, document ids and the rows "
                                            "of any query result"),
    max_queries: int = typer.Option(_DEFAULTS["max_queries"], min=1,
                                    help="cap on queries running at once (more are refused as busy)"),
) -> None:
    """Serve datasets over Arrow Flight: ``open_dataset("grpc://HOST:PORT/NAME")`` streams their batches.

    Clients name datasets, never paths.  Stops cleanly on SIGTERM or Ctrl-C."""
    from actlake.client.dataset import open_dataset
    from actlake.service.flight_server import ActlakeFlightServer, Limits, limit_malloc_arenas

    limit_malloc_arenas()  # before the loader's threads exist (issue 10: RSS after abandoned streams)
    if token and token_file:
        raise JobSpecError("give --token or --token-file, not both")
    if token_file:
        try:
            with open(token_file) as f:
                token = f.readline().strip()
        except OSError as e:
            raise JobSpecError(f"cannot read --token-file: {e.strerror}") from None
        if not token:
            raise JobSpecError("--token-file is empty")
    if bool(tls_cert) != bool(tls_key):
        raise JobSpecError("TLS needs both --tls-cert and --tls-key")
    tls = None
    if tls_cert and tls_key:
        try:
            with open(tls_cert, "rb") as c, open(tls_key, "rb") as k:
                tls = (c.read(), k.read())
        except OSError as e:
            raise JobSpecError(f"cannot read TLS files: {e.strerror}: {e.filename}") from None
    names = _names(uris, name or [])
    datasets = {n: open_dataset(u) for n, u in zip(names, uris)}  # storage credentials come from the env
    scheme = "grpc+tls" if tls else "grpc"
    limits = Limits(max_batch_rows, max_readahead, max_buffer_rows, max_streams, max_query_rows, max_queries)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        server = ActlakeFlightServer(datasets, f"{scheme}://{host}:{port}", token=token or None, tls=tls,
                                     limits=limits, log=log)
    except Exception as e:  # a taken port, bad TLS material, ...
        raise RemoteError(f"cannot start the server on {host}:{port}: {e}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before 'listening': a supervisor may signal right after it
        signal.signal(sig, lambda *_: stop.set())
    for n, u in zip(names, uris):
        print(f"serving {n} ({datasets[n].num_rows:,} rows) from {_public(u)}", flush=True)
    print(f"listening on {scheme}://{host}:{server.port} (token {'required' if token else 'not required'}, "
          f"pid {os.getpid()})", flush=True)

    # The server runs from construction on.  Not server.serve(): pyarrow's serve() turns SIGTERM
    # into a gRPC shutdown that waits for every open stream, including one whose client stopped reading.
    while not stop.wait(0.5):
        pass
    print("shutting down", file=sys.stderr, flush=True)
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(10)  # streams end at their next batch
    if stopper.is_alive():  # a client that stopped reading holds its call open: do not wait for it
        print("streams still open after 10 s; exiting", file=sys.stderr, flush=True)
        os._exit(0)
