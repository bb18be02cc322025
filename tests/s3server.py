"""A local S3 server for the object-storage tests and benchmark: moto's S3 emulation (from PyPI),
served inside the calling process by a threaded werkzeug server, with a switch that makes chosen
requests fail and a latency added to every request.

Why moto: it is a Python package (no binary download, no Docker), and it emulates what the
pipeline relies on: path-style requests, ListObjectsV2 with `start-after`, multipart uploads,
conditional writes (`If-None-Match: *` on PUT and on CompleteMultipartUpload, `If-Match` on PUT).
Its check-then-write of a conditional PUT takes no lock, so two simultaneous creates of one key
could both succeed under moto's own threaded server. Here every request is served on a thread of
its own but moto answers one at a time behind one lock, so every conditional write is atomic, as
on S3; the latency (`latency_ms`) is spent outside that lock, so requests overlap as they do on
S3 (AWS documents small-object latency as "often tens of milliseconds"). The server counts the
requests in flight when each one starts (`in_flight`): what the store sees of a client's
concurrency. What it does not emulate: throttling and 5xx faults of S3's own (the fault switch
injects them), `409 ConditionalRequestConflict`, and durability (objects are in memory).
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

REGION = 'us-east-1'
# moto keeps its buckets in the process, shared by every server: bucket names are never reused.
_BUCKETS = itertools.count()
# Requests a fault may match: (HTTP method, path, query string).
Request = tuple[str, str, str]


class _Quiet(WSGIRequestHandler):
    protocol_version = 'HTTP/1.0'

    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


@dataclass
class Fault:
    """Requests matching `matches` are answered `status` with S3 error `code`, at most `times`
    times (None: until cleared)."""
    matches: Callable[[Request], bool]
    status: int
    code: str
    times: int | None = None
    hits: int = 0


class _Store:
    """The WSGI app: the faults and the latency in front of moto, which answers one request at a
    time."""

    def __init__(self, app: Callable, latency_ms: float) -> None:
        self.app = app
        self.latency = latency_ms / 1000
        self.fault: Fault | None = None
        self.requests: list[Request] = []
        # Requests in flight when each request of `requests` started, itself included.
        self.in_flight: list[int] = []
        self._flying = 0
        self.lock = threading.Lock()
        self._moto = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> object:
        request = (environ['REQUEST_METHOD'], environ.get('PATH_INFO', ''),
                   environ.get('QUERY_STRING', ''))
        with self.lock:
            self._flying += 1
            self.requests.append(request)
            self.in_flight.append(self._flying)
            fault = self.fault
            hit = fault is not None and (fault.times is None or fault.hits < fault.times) \
                and fault.matches(request)
            if hit and fault is not None:
                fault.hits += 1
        try:
            if self.latency:
                time.sleep(self.latency)
            if hit and fault is not None:
                # Drain the body, as a real server reads it before answering.
                length = int(environ.get('CONTENT_LENGTH') or 0)
                if length:
                    environ['wsgi.input'].read(length)
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}'
                        f'</Code><Message>injected by the test</Message></Error>').encode()
                start_response(f'{fault.status} Injected',
                               [('Content-Type', 'application/xml'),
                                ('Content-Length', str(len(body)))])
                return [body]
            return self._one_at_a_time(environ, start_response)
        finally:
            with self.lock:
                self._flying -= 1

    def _one_at_a_time(self, environ: dict, start_response: Callable) -> list[bytes]:
        """moto's answer, whole, computed under the lock (its body may be computed lazily)."""
        answered: list[tuple[str, list]] = []

        def hold(status: str, headers: list, exc_info: object = None) -> None:
            answered.append((status, headers))

        with self._moto:
            body = self.app(environ, hold)
            try:
                data = b''.join(body)
            finally:
                close = getattr(body, 'close', None)
                if close is not None:
                    close()
        status, headers = answered[-1]
        start_response(status, headers)
        return [data]


class S3Server:
    """The running server, its settings for the pipeline and the readers, and a client."""

    def __init__(self, latency_ms: float = 0) -> None:
        self._store = _Store(DomainDispatcherApplication(create_backend_app), latency_ms)
        self._server = make_server('127.0.0.1', 0, self._store, threaded=True,
                                   request_handler=_Quiet)
        self._server.daemon_threads = True
        self.endpoint = f'http://127.0.0.1:{self._server.server_port}'
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.client = boto3.client('s3', endpoint_url=self.endpoint, region_name=REGION,
                                   aws_access_key_id='test', aws_secret_access_key='test')

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()

    @property
    def env(self) -> dict[str, str]:
        """The standard `AWS_*` variables a pipeline process reads its S3 settings from."""
        return {'AWS_ENDPOINT_URL': self.endpoint, 'AWS_ALLOW_HTTP': 'true',
                'AWS_REGION': REGION, 'AWS_ACCESS_KEY_ID': 'test',
                'AWS_SECRET_ACCESS_KEY': 'never-printed-s3-secret'}

    @property
    def storage_options(self) -> dict[str, str]:
        """The same settings as `deltalake`/Polars storage options."""
        return self.env

    def new_bucket(self) -> str:
        """A new empty bucket's name."""
        name = f'aquabill-{next(_BUCKETS)}'
        self.client.create_bucket(Bucket=name)
        return name

    def upload(self, local: Path, bucket: str, prefix: str) -> str:
        """Copies the folder `local` to `s3://bucket/prefix`; returns that URL."""
        for path in sorted(p for p in local.rglob('*') if p.is_file()):
            key = f'{prefix}/{path.relative_to(local).as_posix()}'
            self.client.upload_file(str(path), bucket, key)
        return f's3://{bucket}/{prefix}'

    def keys(self, bucket: str, prefix: str = '') -> list[str]:
        pages = self.client.get_paginator('list_objects_v2').paginate(Bucket=bucket,
                                                                      Prefix=prefix)
        return [o['Key'] for page in pages for o in page.get('Contents', [])]

    def download(self, bucket: str, prefix: str, local: Path) -> Path:
        """Copies `s3://bucket/prefix` to the folder `local`; returns it."""
        for key in self.keys(bucket, f'{prefix}/'):
            path = local / key[len(prefix) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(bucket, key, str(path))
        return local

    @property
    def requests(self) -> list[Request]:
        """Every request served so far (method, path, query string)."""
        return self._store.requests

    def forget_requests(self) -> None:
        """Starts the record of requests (and of their concurrency) anew."""
        with self._store.lock:
            self._store.requests.clear()
            self._store.in_flight.clear()

    @property
    def latency_ms(self) -> float:
        """What every request waits before it is answered."""
        return self._store.latency * 1000

    @latency_ms.setter
    def latency_ms(self, value: float) -> None:
        self._store.latency = value / 1000

    def in_flight(self, since: int = 0) -> list[int]:
        """For each request from the `since`-th on, the requests in flight when it started."""
        return self._store.in_flight[since:]

    def concurrency(self, since: int = 0) -> tuple[float, int]:
        """The median and the most requests in flight, over the requests from `since` on."""
        flying = self.in_flight(since)
        return (statistics.median(flying), max(flying)) if flying else (0, 0)

    @contextmanager
    def failing(self, fault: Fault) -> Iterator[Fault]:
        """Injects `fault` while the block runs."""
        self._store.fault = fault
        try:
            yield fault
        finally:
            self._store.fault = None
