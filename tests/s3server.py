"""A local S3 server for the object-storage tests and benchmark: moto's S3 emulation (from PyPI),
served inside the calling process by a single-threaded werkzeug server, with a switch that makes
chosen requests fail.

Why moto: it is a Python package (no binary download, no Docker), and it emulates what the
pipeline relies on: path-style requests, ListObjectsV2 with `start-after`, multipart uploads,
conditional writes (`If-None-Match: *` on PUT and on CompleteMultipartUpload, `If-Match` on PUT).
Its check-then-write of a conditional PUT takes no lock, so under moto's own threaded server two
simultaneous creates of one key could both succeed; served single-threaded (one request at a
time, HTTP/1.0 so no connection holds the server) every conditional write is atomic, as on S3.
What it does not emulate: S3's latency, throttling and 5xx faults of its own (the fault switch
injects them), `409 ConditionalRequestConflict`, and durability (objects are in memory).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

REGION = 'us-east-1'
# Requests a fault may match: (HTTP method, path, query string).
Request = tuple[str, str, str]


class _OneAtATime(WSGIRequestHandler):
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


class _Faulty:
    """The WSGI app with the faults in front of it."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.fault: Fault | None = None
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> object:
        request = (environ['REQUEST_METHOD'], environ.get('PATH_INFO', ''),
                   environ.get('QUERY_STRING', ''))
        with self.lock:
            self.requests.append(request)
            fault = self.fault
            hit = fault is not None and (fault.times is None or fault.hits < fault.times) \
                and fault.matches(request)
            if hit and fault is not None:
                fault.hits += 1
        if hit and fault is not None:
            # Drain the body, as a real server reads it before answering.
            length = int(environ.get('CONTENT_LENGTH') or 0)
            if length:
                environ['wsgi.input'].read(length)
            body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                    f'<Message>injected by the test</Message></Error>').encode()
            start_response(f'{fault.status} Injected', [('Content-Type', 'application/xml'),
                                                         ('Content-Length', str(len(body)))])
            return [body]
        return self.app(environ, start_response)


class S3Server:
    """The running server, its settings for the pipeline and the readers, and a client."""

    def __init__(self) -> None:
        self._faulty = _Faulty(DomainDispatcherApplication(create_backend_app))
        self._server = make_server('127.0.0.1', 0, self._faulty, threaded=False,
                                   request_handler=_OneAtATime)
        self.endpoint = f'http://127.0.0.1:{self._server.server_port}'
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._buckets = itertools.count()
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
        name = f'aquabill-{next(self._buckets)}'
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
        """Every request served so far (method, path, query string); clear it to start anew."""
        return self._faulty.requests

    @contextmanager
    def failing(self, fault: Fault) -> Iterator[Fault]:
        """Injects `fault` while the block runs."""
        self._faulty.fault = fault
        try:
            yield fault
        finally:
            self._faulty.fault = None
